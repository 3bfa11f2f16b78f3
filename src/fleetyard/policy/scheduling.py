"""The scheduler (pure): a snapshot and a time in, a plan out.

One pass (:func:`plan`) over the pending jobs in order:

1. **Order.** Priority class (higher first); within a class, fair share (the queue that used less
   of its share by decayed usage first), then the job's own ``priority``, then age, then id.
2. **Quota.** A job may take boards of a generation only within its queue's headroom (nominal,
   then what its cohort lends, up to its borrowing limit: :class:`~fleetyard.policy.queues.QuotaLedger`).
3. **Placement.** A gang gets all K boards at once or none, honouring constraints (generations,
   labels, firmware, exclusions, named boards), topology (same host / same rack, required or
   preferred) and packing (pack or spread); boards with the job's artifact loaded come first
   (:mod:`fleetyard.policy.placement`). A job that does not fit does not block smaller ones.
4. **Preemption.** A job within its queue's nominal quota that does not fit may take boards from
   running jobs: borrowers (queues beyond their nominal) first, then lower priority of its own
   queue, then the newest. Only as many as it needs; they are told to stop (``preempted``).
5. **Backfill.** The first job that still does not fit (quota allowing) gets a reservation: the
   boards that free soonest (by running jobs' expected ends), held for it. A later job may use
   held boards only if its time limit ends before the reservation's expected start.

Every job left pending gets a reason with the numbers (:class:`Plan.reasons`). Same snapshot,
same plan: nothing here reads a clock or iterates an unordered collection.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from fleetyard.domain.spec import JobSpec, Placement
from fleetyard.policy.fairshare import share_key
from fleetyard.policy.placement import BoardView, Constraints, Pool, Shape
from fleetyard.policy.queues import UNLIMITED, QueueSpec, QuotaLedger

__all__ = [
    "Binding",
    "BoardView",
    "FleetBoard",
    "PendingJob",
    "Plan",
    "Preemption",
    "Reservation",
    "RunningJob",
    "Snapshot",
    "constraints_of",
    "pending_job",
    "plan",
    "queue_order",
    "shape_of",
    "why_unschedulable",
]


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: int
    queue: str
    boards: int
    shape: Shape
    priority: int = 0  # the priority class's value
    rank: int = 0  # the job's own priority within its class
    submitted_at: float = 0.0
    time_limit_s: float = 3600.0
    artifact: str | None = None  # for warm affinity


@dataclass(frozen=True, slots=True)
class RunningJob:
    id: int
    queue: str
    boards: tuple[str, ...]
    priority: int = 0
    rank: int = 0
    started_at: float = 0.0
    expected_end: float = float("inf")
    preempted_for: int | None = None  # already told to stop, for this job
    preemptible: bool = True


@dataclass(frozen=True)
class Snapshot:
    now: float
    boards: Sequence[BoardView]  # every board that could run work someday
    free: frozenset[str]  # those available now
    pending: Sequence[PendingJob]
    running: Sequence[RunningJob] = ()
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    usage: Mapping[str, float] = field(default_factory=dict)  # decayed board-seconds per queue
    reservations: int = 1  # how many blocked jobs get a backfill reservation


@dataclass(frozen=True)
class Binding:
    job_id: int
    board_ids: tuple[str, ...]  # index = rank


@dataclass(frozen=True)
class Preemption:
    victim: int  # a running job
    for_job: int
    reason: str


@dataclass(frozen=True)
class Reservation:
    job_id: int
    board_ids: tuple[str, ...]
    expected_start: float


@dataclass
class Plan:
    bindings: list[Binding] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)  # every pending job not bound


# ---- from specs ---------------------------------------------------------------------------------


def constraints_of(spec: JobSpec) -> Constraints:
    return Constraints(
        generations=frozenset(spec.generations),
        labels=tuple(sorted(spec.labels.items())),
        firmware=spec.firmware_selector(),
        exclude=frozenset(spec.exclude_boards),
        only=frozenset(spec.board_ids),
    )


def shape_of(spec: JobSpec) -> Shape:
    return Shape(constraints_of(spec), spec.placement, spec.placement_required, spec.packing)


def pending_job(
    job_id: int,
    spec: JobSpec,
    *,
    queue: str,
    priority: int = 0,
    submitted_at: float = 0.0,
    artifact: str | None = None,
) -> PendingJob:
    """The scheduler's view of a queued job; ``priority`` is its class's value."""
    return PendingJob(
        id=job_id,
        queue=queue,
        boards=spec.boards,
        shape=shape_of(spec),
        priority=priority,
        rank=spec.priority,
        submitted_at=submitted_at,
        time_limit_s=spec.time_limit_s,
        artifact=artifact,
    )


# ---- the pass -----------------------------------------------------------------------------------


def _weight(spec: QueueSpec) -> float:
    return float(sum(spec.nominal.values())) if spec.nominal else 1.0


def queue_order(
    jobs: Sequence[PendingJob], queues: Mapping[str, QueueSpec], usage: Mapping[str, float]
) -> list[PendingJob]:
    """Class, then fair share, then the job's own priority, then first come first served."""
    shares = {q: share_key(usage.get(q, 0.0), _weight(queues.get(q) or QueueSpec(q))) for q in {j.queue for j in jobs}}
    return sorted(jobs, key=lambda j: (-j.priority, shares[j.queue], -j.rank, j.submitted_at, j.id))


def plan(snap: Snapshot) -> Plan:
    """Bind, preempt, reserve, explain: see the module's docstring."""
    out = Plan()
    pool = Pool(snap.boards, snap.free)
    gen_of = {b.id: b.generation for b in snap.boards}
    all_gens = frozenset(gen_of.values())
    used: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in snap.running:
        for b in r.boards:
            if b in gen_of:
                used[r.queue][gen_of[b]] += 1
    ledger = QuotaLedger(snap.queues, used)
    waiting_on: dict[int, list[int]] = defaultdict(list)  # preemptor -> victims still stopping
    for r in snap.running:
        if r.preempted_for is not None:
            waiting_on[r.preempted_for].append(r.id)
    victims_taken: set[int] = {r.id for r in snap.running if r.preempted_for is not None}
    held: dict[str, Reservation] = {}  # board -> the reservation holding it (free now, kept for it)
    # A shape that failed at size k fails at any size >= k for the rest of the pass (the free set
    # only shrinks): the reason, kept per (shape, caps, may-use-held).
    failed: dict[tuple[object, ...], tuple[int, str]] = {}
    blocked_ahead = 0

    for job in queue_order(snap.pending, snap.queues, snap.usage):
        gens = job.shape.constraints.generations or all_gens
        caps = _caps(ledger, job.queue, gens)
        if caps is not None and sum(caps.values()) < job.boards:
            out.reasons[job.id] = _quota_reason(ledger, job, gens)
            continue
        short = bool(held) and min(r.expected_start for r in held.values()) >= snap.now + job.time_limit_s
        memo = (job.shape, None if caps is None else tuple(sorted(caps.items())), short)
        seen = failed.get(memo)
        if seen is not None and job.boards >= seen[0]:
            out.reasons[job.id] = seen[1] + (f"; behind {blocked_ahead} waiting job(s) ahead" if blocked_ahead else "")
            blocked_ahead += 1
            continue
        usable_held = [b for b in held if short]
        pool.give(usable_held)
        got = pool.pick(job.shape, job.boards, caps=caps, warm=job.artifact)
        pool.take(usable_held)
        if got is not None:
            for b in got:
                held.pop(b, None)
            pool.take(got)
            ledger.take(job.queue, _by_gen(got, gen_of))
            out.bindings.append(Binding(job.id, got))
            continue
        # It does not fit now.
        if job.id in waiting_on:
            out.reasons[job.id] = (
                f"waiting for {len(waiting_on[job.id])} preempted job(s) to stop and free their boards"
            )
            blocked_ahead += 1
            continue
        victims = _victims(snap, pool, ledger, job, gens, gen_of, victims_taken)
        if victims:
            names = ", ".join(str(v.id) for v in victims)
            for v in victims:
                victims_taken.add(v.id)
                out.preemptions.append(Preemption(v.id, job.id, _preempt_reason(ledger, v, job, gen_of)))
            out.reasons[job.id] = f"preempting job(s) {names} for their boards"
            blocked_ahead += 1
            continue
        reason = _fit_reason(pool, job, held, short)
        if len(out.reservations) < snap.reservations:
            res = _reserve(snap, pool, job, caps)
            if res is not None:
                out.reservations.append(res)
                for b in res.board_ids:
                    if b in pool.free:
                        held[b] = res
                pool.take(res.board_ids)
                reason += f"; boards reserved for it, expected start in {res.expected_start - snap.now:.0f} s"
        if blocked_ahead:
            reason += f"; behind {blocked_ahead} waiting job(s) ahead"
        failed.setdefault(memo, (job.boards, reason))
        out.reasons[job.id] = reason
        blocked_ahead += 1
    return out


def _by_gen(boards: Sequence[str], gen_of: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for b in boards:
        out[gen_of[b]] += 1
    return out


def _caps(ledger: QuotaLedger, queue: str, gens: frozenset[str]) -> dict[str, int] | None:
    caps = {g: ledger.headroom(queue, g) for g in sorted(gens)}
    return None if all(c >= UNLIMITED for c in caps.values()) else caps


def _quota_reason(ledger: QuotaLedger, job: PendingJob, gens: frozenset[str]) -> str:
    states = "; ".join(ledger.describe(job.queue, g) for g in sorted(gens))
    return f"quota: needs {job.boards} board(s) but {states}"


def _fit_reason(pool: Pool, job: PendingJob, held: Mapping[str, Reservation], short: bool) -> str:
    idx = pool.index(job.shape.constraints)
    free = idx.total
    want = f"{job.boards} board(s) ({job.shape.constraints.describe()})"
    if not any(job.shape.constraints.admits(b) for b in pool.boards.values()):
        return f"no board matches: wants {want}"
    where = ""
    if job.shape.placement is Placement.SAME_HOST:
        where = f" on one host (at most {idx.max_count} free on any host)"
    elif job.shape.placement is Placement.SAME_RACK:
        most = max(idx.rack_count.values(), default=0)
        where = f" in one rack (at most {most} free in any rack)"
    reason = f"waiting for {want}{where}: {free} free match now"
    held_here = [b for b in held if job.shape.constraints.admits(pool.boards[b])]
    if held_here and not short:
        r = held[held_here[0]]
        reason += (
            f"; {len(held_here)} more are held for job {r.job_id}'s reservation, which its time limit "
            f"({job.time_limit_s:.0f} s) would overrun"
        )
    return reason


def _victims(
    snap: Snapshot,
    pool: Pool,
    ledger: QuotaLedger,
    job: PendingJob,
    gens: frozenset[str],
    gen_of: Mapping[str, str],
    taken: set[int],
) -> list[RunningJob]:
    """The fewest running jobs to stop so that ``job`` fits, or [] (not allowed, or not enough)."""
    nominal_gens = [g for g in sorted(gens) if ledger.within_nominal(job.queue, g, job.boards)]
    if not nominal_gens:
        return []  # only a job within its nominal quota may preempt
    caps = {g: job.boards for g in nominal_gens}
    c = job.shape.constraints
    candidates: list[tuple[tuple[object, ...], RunningJob, list[str]]] = []
    for r in snap.running:
        if not r.preemptible or r.id in taken or r.id == job.id:
            continue
        mine = [b for b in pool.matching(c, r.boards) if gen_of[b] in caps]
        if not mine:
            continue
        borrower = r.queue != job.queue and any(ledger.borrowing(r.queue, gen_of[b]) > 0 for b in r.boards)
        lower = r.queue == job.queue and (r.priority, r.rank) < (job.priority, job.rank)
        if not (borrower or lower):
            continue
        candidates.append(((not borrower, r.priority, r.rank, -r.started_at, r.id), r, mine))
    candidates.sort(key=lambda t: t[0])
    chosen: list[tuple[RunningJob, list[str]]] = []
    freed: list[str] = []
    for _, r, mine in candidates:
        chosen.append((r, mine))
        freed += mine
        if pool.index(c).total + len(freed) < job.boards:
            continue
        if _fits_with(pool, job, caps, freed):
            break
    else:
        return []
    # Keep only those needed: drop the last-chosen first while it still fits.
    for r, mine in list(reversed(chosen)):
        rest = [b for b in freed if b not in set(mine)]
        if _fits_with(pool, job, caps, rest):
            chosen.remove((r, mine))
            freed = rest
    return [r for r, _ in chosen]


def _fits_with(pool: Pool, job: PendingJob, caps: Mapping[str, int], extra: Sequence[str]) -> bool:
    pool.give(extra)
    try:
        return pool.pick(job.shape, job.boards, caps=caps) is not None
    finally:
        pool.take(extra)


def _preempt_reason(ledger: QuotaLedger, victim: RunningJob, job: PendingJob, gen_of: Mapping[str, str]) -> str:
    if victim.queue != job.queue:
        gens = sorted({gen_of[b] for b in victim.boards if b in gen_of})
        return (
            f"preempted for job {job.id}: queue {victim.queue} borrows beyond its nominal quota of "
            f"{', '.join(gens)} and queue {job.queue} reclaims it"
        )
    return f"preempted for job {job.id} of higher priority in queue {job.queue}"


def _reserve(snap: Snapshot, pool: Pool, job: PendingJob, caps: Mapping[str, int] | None) -> Reservation | None:
    """The boards that free soonest for ``job``, and when: free ones now, then running jobs' boards
    in order of their expected end, until the job fits."""
    c = job.shape.constraints
    ending = sorted((r for r in snap.running if r.preempted_for is None), key=lambda r: (r.expected_end, r.id))
    freed: list[str] = []
    base = pool.index(c).total
    for r in ending:
        mine = pool.matching(c, r.boards)
        if not mine:
            continue
        freed += mine
        if base + len(freed) < job.boards or r.expected_end == float("inf"):
            continue
        pool.give(freed)
        try:
            got = pool.pick(job.shape, job.boards, caps=caps)
        finally:
            pool.take(freed)
        if got is not None:
            return Reservation(job.id, got, max(r.expected_end, snap.now))
    return None


# ---- rejection at submit ------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetBoard:
    """A board that could one day run work (any state but retired or quarantined)."""

    id: str
    host_id: str
    generation: str
    labels: Mapping[str, str] = field(default_factory=dict)
    device: str = ""  # what the board's driver calls it: "sim:3", "cpu:0-7", "cuda:1"
    firmware: str = ""
    rack: str = ""

    def view(self) -> BoardView:
        return BoardView(
            self.id, self.host_id, self.generation, rack=self.rack, firmware=self.firmware, labels=self.labels
        )


def why_unschedulable(job: PendingJob, fleet: Sequence[FleetBoard], ledger: QuotaLedger | None = None) -> str | None:
    """Why a job can never run on this fleet (constraints, topology, quota), or None."""
    c = job.shape.constraints
    boards = [b.view() for b in fleet]
    known = sorted({b.generation for b in boards})
    unknown = sorted(c.generations - set(known))
    if c.generations and len(unknown) == len(c.generations):
        return f"unknown generation {', '.join(unknown)}; the fleet has: {', '.join(known) or 'no boards'}"
    if c.only:
        absent = sorted(c.only - {b.id for b in boards})
        if len(absent) > len(c.only) - job.boards:
            return f"board(s) {', '.join(absent)} not in the fleet (or retired or quarantined)"
    passed, turned_away = c.rejections(boards)
    wanted = c.describe()
    if passed < job.boards:
        detail = ", ".join(f"{n} by {k}" for k, n in turned_away.items())
        return f"asks for {job.boards} boards ({wanted}) but the fleet has only {passed} such boards" + (
            f" (of {len(boards)}: {detail} excluded)" if detail else ""
        )
    matching = [b for b in boards if c.admits(b)]
    if job.shape.required and job.shape.placement is not Placement.ANY:
        on_host = job.shape.placement is Placement.SAME_HOST
        what = "host" if on_host else "rack"
        per: dict[str, int] = defaultdict(int)
        for b in matching:
            per[b.host if on_host else b.rack] += 1
        most = max(per.values())
        if most < job.boards:
            return f"asks for {job.boards} boards ({wanted}) on one {what} but no {what} has more than {most}"
    if ledger is not None:
        return ledger.refusal(job.queue, {b.generation for b in matching}, job.boards)
    return None
