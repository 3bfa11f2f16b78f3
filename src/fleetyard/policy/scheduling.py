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
4. **Preemption** (:mod:`fleetyard.policy.preemption`). A job that does not fit may take boards
   from running jobs: those of queues of its cohort that borrowed beyond their nominal quota when
   the pass began, if it stays within its own nominal quota (reclaiming); then lower-priority jobs
   of its own queue, even when its queue's quota is spent (it takes their place); within each, the
   least work lost first (board-seconds run; among jobs of one size, the newest). A job that must
   be on one host (rack) takes the host (rack) whose victims lose the least. Only as many as it
   needs, only if it could start on the boards they free, and never more work thrown away than
   the job can do itself (its boards times its time limit).
   The pass books each preemption as done (the victims' boards leave their queue's quota, the
   job's enter its own), so it reclaims exactly what is owed. The boards it will run on are kept
   for it until it binds (:attr:`Plan.kept`, then :attr:`Snapshot.held_for`). A job preempted
   before is protected for a while after it starts again, and one preempted twice is not
   preempted again (:attr:`RunningJob.protected_until`, kept by
   :mod:`fleetyard.policy.preemption_holds`): no job is thrown back and forth. A job whose
   search found no victims (:attr:`Plan.searched_in_vain`) does not search again for a while
   (:attr:`Snapshot.search_after`): it waits for boards to free, as a job not allowed to preempt.
5. **Backfill** (:mod:`fleetyard.policy.backfill`). The first job of each generation that still
   does not fit (quota allowing) gets a reservation: the boards that free soonest (by running
   jobs' expected ends), held for it. A later job may use held boards only if its time limit ends
   before the reservation's expected start. A job its queue's quota holds back holds that quota
   on its own generations only.

Jobs that fit within their queue's nominal quota are placed on free boards before any queue
borrows (as Kueue admits). The data types are in :mod:`fleetyard.policy.snapshot`; refusal at
submit in :mod:`fleetyard.policy.refusal`.

Every job left pending gets a reason with the numbers (:class:`Plan.reasons`), unless the snapshot
sets a ``window``: then only the first ``window`` jobs left waiting are explained, preempted for
and reserved for; past them the pass only places jobs on free boards, in the same order, and
stops once no queue may take a free board. Same snapshot, same plan: nothing here reads a clock
or depends on the order of an unordered collection.

The snapshot's boards and line may be kept by the caller from pass to pass
(:class:`~fleetyard.policy.placement.Pool`, :class:`~fleetyard.policy.line.Line`): a pass then
costs what it looks at, not the size of the fleet and the queue.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence

from fleetyard.domain.spec import JobSpec, Placement
from fleetyard.policy.backfill import Ending, reserve
from fleetyard.policy.line import Line
from fleetyard.policy.placement import BoardView, Constraints, Pool, Shape
from fleetyard.policy.preemption import Victims, lost_budget, may_be_preempted, preempt_reason, victims_for
from fleetyard.policy.queues import UNLIMITED, QueueSpec, QuotaLedger
from fleetyard.policy.refusal import FleetBoard, why_unschedulable
from fleetyard.policy.snapshot import Binding, PendingJob, Plan, Preemption, Reservation, RunningJob, Snapshot

__all__ = [
    "Binding",
    "BoardView",
    "FleetBoard",
    "Line",
    "PendingJob",
    "Plan",
    "Pool",
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
    max_lost_s: float | None = None,
) -> PendingJob:
    """The scheduler's view of a queued job; ``priority`` and ``max_lost_s`` are its class's."""
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
        max_lost_s=max_lost_s,
    )


# ---- the pass -----------------------------------------------------------------------------------


def queue_order(
    jobs: Iterable[PendingJob], queues: Mapping[str, QueueSpec], usage: Mapping[str, float]
) -> list[PendingJob]:
    """Class, then fair share, then the job's own priority, then first come first served (:class:`Line`)."""
    return list(Line(jobs).walk(queues, usage))


def plan(snap: Snapshot) -> Plan:
    """Bind, preempt, reserve, explain: see the module's docstring."""
    out = Plan()
    if isinstance(snap.boards, Pool):
        pool = snap.boards
        pool.reset(snap.free)
    else:
        pool = Pool(snap.boards, snap.free)
    line = snap.pending if isinstance(snap.pending, Line) else Line(snap.pending)
    # Boards freed for a job that still waits: out of the pool but for that job's own picks.
    kept: dict[int, list[str]] = defaultdict(list)
    if snap.held_for:
        waiting_ids = line.ids()
        for b, j in sorted(snap.held_for.items()):
            if j in waiting_ids and b in pool.free:
                kept[j].append(b)
        pool.take([b for bs in kept.values() for b in bs])
    gen_of = pool.gen_of
    all_gens = pool.generations
    # One look at the running jobs: the boards each queue holds; who is stopping already, and for
    # whom; who could be preempted at all (the lowest (priority, rank) per queue, a cheap filter).
    held_by_queue: dict[str, list[str]] = defaultdict(list)
    waiting_on: dict[int, list[int]] = defaultdict(list)  # preemptor -> victims still stopping
    victims_taken: set[int] = set()
    lowest: dict[str, tuple[int, int]] = {}
    for r in snap.running:
        held_by_queue[r.queue].extend(r.boards)
        if r.preempted_for is not None:
            waiting_on[r.preempted_for].append(r.id)
            victims_taken.add(r.id)
        elif may_be_preempted(r, snap.now):
            mine = (r.priority, r.rank)
            if r.queue not in lowest or mine < lowest[r.queue]:
                lowest[r.queue] = mine
    # A board not in the pool counts for no generation.
    used = {q: Counter(filter(None, map(gen_of.get, bs))) for q, bs in held_by_queue.items()}
    ledger = QuotaLedger(snap.queues, used)
    borrowing_at_start = {(q, g) for q, by_gen in used.items() for g in by_gen if ledger.borrowing(q, g) > 0}
    held: dict[str, Reservation] = {}  # board -> the reservation holding it (free now, kept for it)
    held_by: dict[Reservation, int] = {}  # reservation -> how many of its boards are still held
    # A (queue, generation) whose head job waits for its quota: that job's reservation; the queue's
    # later jobs may use that generation's quota only if they end before it (else they would starve
    # it). Other generations' quota stays theirs to use.
    quota_held: dict[tuple[str, str], Reservation] = {}
    # Memos for the pass. The free set and every queue's headroom only shrink, so a shape that did
    # not fit at size k fits at no size >= k (per shape, caps, may-use-held boards); and a search
    # for victims that failed at size k fails at any size >= k (per queue, priority, rank, shape),
    # or, where the work it was allowed to throw away (L board-seconds) decided it, at any size
    # >= k allowed no more than L.
    fit_failed: dict[tuple[object, ...], tuple[int, str]] = {}
    preempt_failed: dict[tuple[object, ...], list[tuple[int, float]]] = {}
    blocked_ahead = 0
    # Headroom changes only when the ledger does (a binding): caps per (queue, generations) until then.
    caps_of: dict[tuple[str, frozenset[str]], tuple[dict[str, int] | None, object]] = {}
    quota_states: dict[tuple[str, frozenset[str]], str] = {}  # as caps_of: until the next binding
    any_match: dict[Constraints, bool] = {}
    victims_of: Victims | None = None  # built when a job first may preempt
    ending: Ending | None = None  # built when a job is first reserved for
    # A reservation for a job its quota holds back that failed at size k fails at any size >= k
    # (per queue, generations, shape and the queue's headroom): the pool only shrinks in a pass.
    quota_reserve_failed: dict[tuple[object, ...], int] = {}

    def ending_now() -> Ending:
        nonlocal ending
        if ending is None:
            ending = Ending(snap.running)
        return ending

    reserved: Counter[str] = Counter()  # reservations made this pass, per generation
    # Held boards are given to the pool for a job that ends before every reservation starts, and
    # left there for the next such job: taken back only when something else looks at the pool
    # (a 256-board reservation given and taken back per job was most of a pass).
    held_out = True

    def held_back() -> None:
        nonlocal held_out
        if not held_out:
            pool.take(list(held))
            held_out = True

    def may_reserve(gens: frozenset[str]) -> bool:
        return all(reserved[g] < snap.reservations for g in gens)

    def own_below(job: PendingJob) -> bool:
        """Whether the job's own queue runs a job it may preempt (lower priority, not stopping)."""
        mine = lowest.get(job.queue)
        return mine is not None and mine < (job.priority, job.rank)

    def may_preempt(job: PendingJob, gens: frozenset[str]) -> bool:
        if own_below(job):
            return True  # what its own victims free counts towards its nominal quota too
        if not any(ledger.within_nominal(job.queue, g, job.boards) for g in gens):
            return False  # only a job within its nominal quota may preempt
        return any(
            q != job.queue and ledger.cohort_mates(job.queue, q) and ledger.borrowing(q, g) > 0
            for q, g in borrowing_at_start
        )

    def preempt(job: PendingJob, gens: frozenset[str]) -> bool:
        """Tell running jobs to stop for ``job`` (:func:`victims_for`), with its reason; or False."""
        nonlocal victims_of, blocked_ahead
        if snap.search_after.get(job.id, -math.inf) > snap.now:
            return False  # it found none lately: it waits for boards to free until it looks again
        key = (job.queue, job.priority, job.rank, job.shape)
        budget = lost_budget(job)  # the most work its victims may lose
        if any(job.boards >= k and budget <= most for k, most in preempt_failed.get(key, ())):
            out.searched_in_vain.append(job.id)  # as one alike found, this pass
            return False
        if not may_preempt(job, gens):
            return False
        if victims_of is None:
            victims_of = Victims(snap.running, gen_of, borrowing_at_start, snap.now)
        victims, by_budget = victims_for(pool, ledger, job, gens, gen_of, victims_taken, victims_of)
        if not victims:
            preempt_failed.setdefault(key, []).append((job.boards, budget if by_budget else math.inf))
            out.searched_in_vain.append(job.id)
            return False
        for v in victims:
            victims_taken.add(v.id)
            out.preemptions.append(Preemption(v.id, job.id, preempt_reason(ledger, v, job, gen_of)))
        claim(job, victims)
        out.reasons[job.id] = f"preempting job(s) {', '.join(str(v.id) for v in victims)} for their boards"
        blocked_ahead += 1
        return True

    def claim(job: PendingJob, victims: list[RunningJob]) -> None:
        """Book the preemption as if done: the victims' boards leave their queues' quota, the
        boards the job will run on enter its own, and the free boards among them are kept from
        the rest of the pass. Else every later job of the queue sees the same room, and the
        victims' queue still looks like a borrower: a pass reclaimed far more than was owed."""
        freed = [b for v in victims for b in v.boards if b in gen_of]
        for v in victims:
            ledger.give(v.queue, _by_gen([b for b in v.boards if b in gen_of], gen_of))
        pool.give(freed)
        got = pool.pick(job.shape, job.boards, warm=job.artifact)
        pool.take(freed)
        runs_on = got if got is not None else tuple(freed[: job.boards])
        free_part = [b for b in runs_on if b in pool.free]
        pool.take(free_part)
        out.kept.update(dict.fromkeys(free_part, job.id))
        ledger.take(job.queue, _by_gen(runs_on, gen_of))
        caps_of.clear()
        quota_states.clear()

    def waiting_for_victims(job: PendingJob) -> bool:
        nonlocal blocked_ahead
        if job.id not in waiting_on:
            return False
        out.reasons[job.id] = f"waiting for {len(waiting_on[job.id])} preempted job(s) to stop and free their boards"
        blocked_ahead += 1
        return True

    def bind(job: PendingJob, got: tuple[str, ...]) -> None:
        for b in got:
            holder = held.pop(b, None)
            if holder is not None:
                held_by[holder] -= 1
                if not held_by[holder]:
                    del held_by[holder]
        pool.take(got)
        ledger.take(job.queue, _by_gen(got, gen_of))
        caps_of.clear()
        quota_states.clear()
        out.bindings.append(Binding(job.id, got))

    # Two walks of one line: the second replays what the first took, then goes on (tee buffers).
    ahead, order = itertools.tee(line.walk(snap.queues, snap.usage))
    # Within nominal quotas first (as Kueue admits): a job that fits its queue's own quota takes
    # a free board before another queue may borrow it. Else a borrower ahead in the line takes
    # the board a lender's job is about to reclaim, and the two preempt each other in turn.
    # The queues with a nominal quota that have jobs waiting: once each is blocked, the walk ends.
    nominal = {q for q, spec in snap.queues.items() if spec.nominal is not None} & line.queues()
    first = _within_nominal_first(ahead, nominal, pool, ledger, all_gens, bind, kept) if nominal else set()
    del ahead  # the main walk need not keep what the first did not take

    waiting = 0  # jobs left waiting so far: the first `window` of them are explained
    usable: bool | None = None  # whether some queue may still take a free board (None: not asked since a binding)
    for job in order:
        if job.id in first:
            continue
        explain = snap.window is None or waiting < snap.window
        if not explain:
            # Past the window: only place jobs, while some queue may still take a free board.
            if usable is None:
                held_back()
                usable = _usable_free(pool, ledger, line.queues())
            if not usable:
                break
        gens = job.shape.constraints.generations or all_gens
        key = (job.queue, gens)
        if key not in caps_of:
            caps = _caps(ledger, job.queue, gens)
            caps_of[key] = (caps, None if caps is None else tuple(sorted(caps.items())))
        caps, caps_key = caps_of[key]
        if caps is not None and sum(caps.values()) < job.boards:
            waiting += 1
            if not explain:
                continue
            held_back()
            # Its queue's quota is spent; a higher-priority job may still take its own queue's boards.
            if own_below(job) and (waiting_for_victims(job) or preempt(job, gens)):
                continue
            if key not in quota_states:
                quota_states[key] = "; ".join(ledger.describe(job.queue, g) for g in sorted(gens))
            reason = f"quota: needs {job.boards} board(s) but {quota_states[key]}"
            res_key = (job.queue, gens, job.shape, sum(caps.values()))
            if (
                may_reserve(gens)
                and not any((job.queue, g) in quota_held for g in gens)
                and job.boards < quota_reserve_failed.get(res_key, job.boards + 1)
            ):
                res = _reserve_quota(snap, pool, ledger, job, gens, sum(caps.values()), gen_of, ending_now())
                if res is None:
                    quota_reserve_failed[res_key] = job.boards
                else:
                    out.reservations.append(res)
                    reserved.update(gens)
                    for g in gens:
                        quota_held[(job.queue, g)] = res
                    for b in res.board_ids:
                        if b in pool.free:
                            held[b] = res
                            held_by[res] = held_by.get(res, 0) + 1
                    pool.take(res.board_ids)
                    wait = res.expected_start - snap.now
                    reason += f"; its queue's quota and boards reserved for it, expected start in {wait:.0f} s"
            out.reasons[job.id] = reason
            continue
        short = bool(held_by) and min(r.expected_start for r in held_by) >= snap.now + job.time_limit_s
        if quota_held:
            overrun = {
                g: hold
                for g in gens
                if (hold := quota_held.get((job.queue, g))) is not None
                and hold.expected_start < snap.now + job.time_limit_s
            }
            if len(overrun) == len(gens):
                waiting += 1
                if not explain:
                    continue
                held_quota = next(iter(overrun.values()))
                out.reasons[job.id] = (
                    f"queue {job.queue}'s quota is held for job {held_quota.job_id}'s reservation, which this "
                    f"job's time limit ({job.time_limit_s:.0f} s) would overrun"
                )
                blocked_ahead += 1
                continue
            if overrun:  # it may still use the generations not held
                caps = {g: (0 if g in overrun else (caps or {}).get(g, UNLIMITED)) for g in sorted(gens)}
                caps_key = tuple(sorted(caps.items()))
        # Boards kept for this job make its own case: the memo holds for the free boards alone.
        fit_key = (job.shape, caps_key, short, job.id if job.id in kept else None)
        seen = fit_failed.get(fit_key)
        if seen is None or job.boards < seen[0]:
            if short and held_out:
                pool.give(list(held))
                held_out = False
            elif not short:
                held_back()
            own = kept.get(job.id, [])
            pool.give(own)
            got = pool.pick(job.shape, job.boards, caps=caps, warm=job.artifact)
            pool.take(own)
            if got is not None:
                bind(job, got)
                usable = None
                continue
        held_back()
        # It does not fit now.
        waiting += 1
        if not explain:
            fit_failed.setdefault(fit_key, (job.boards, ""))  # read past the window only: no reason
            continue
        if waiting_for_victims(job) or preempt(job, gens):
            continue
        if seen is not None and job.boards >= seen[0]:
            out.reasons[job.id] = seen[1] + (f"; behind {blocked_ahead} waiting job(s) ahead" if blocked_ahead else "")
            blocked_ahead += 1
            continue
        reason = _fit_reason(pool, job, held, short, any_match)
        if may_reserve(gens):
            res = reserve(snap, pool, job, caps, ending_now())
            if res is not None:
                out.reservations.append(res)
                reserved.update(gens)
                for b in res.board_ids:
                    if b in pool.free:
                        held[b] = res
                        held_by[res] = held_by.get(res, 0) + 1
                pool.take(res.board_ids)
                reason += f"; boards reserved for it, expected start in {res.expected_start - snap.now:.0f} s"
        fit_failed.setdefault(fit_key, (job.boards, reason))
        out.reasons[job.id] = reason + (f"; behind {blocked_ahead} waiting job(s) ahead" if blocked_ahead else "")
        blocked_ahead += 1
    held_back()
    return out


def _within_nominal_first(
    order: Iterable[PendingJob],
    candidates: set[str],
    pool: Pool,
    ledger: QuotaLedger,
    all_gens: frozenset[str],
    bind: Callable[[PendingJob, tuple[str, ...]], None],
    kept: Mapping[int, list[str]],
) -> set[int]:
    """Bind, in order, the jobs of queues with a nominal quota that fit within it on free boards;
    their ids. Only placement: preemption, reservations and reasons are the main walk's.

    It stops at the first such job that does not fit: that one may be a gang at the head of the
    line, whose reservation (made by the main walk) smaller jobs behind it must respect."""
    bound: set[int] = set()
    waiting: set[str] = set()  # queues whose next job waits for its own quota: the rest wait behind it
    for job in order:
        if not pool.free or waiting >= candidates:
            break
        spec = ledger.spec(job.queue)
        if spec.nominal is None or job.queue in waiting:
            continue  # an unlimited queue never borrows: the main walk places it
        gens = sorted(job.shape.constraints.generations or all_gens)
        caps = {g: max(0, spec.nominal_of(g) - ledger.usage(job.queue, g)) for g in gens}
        if sum(caps.values()) < job.boards:
            waiting.add(job.queue)
            continue
        own = kept.get(job.id, [])
        pool.give(own)
        got = pool.pick(job.shape, job.boards, caps=caps, warm=job.artifact)
        pool.take(own)
        if got is None:
            break
        bind(job, got)
        bound.add(job.id)
    return bound


def _reserve_quota(
    snap: Snapshot,
    pool: Pool,
    ledger: QuotaLedger,
    job: PendingJob,
    gens: frozenset[str],
    headroom: int,
    gen_of: Mapping[str, str],
    ending: Ending,
) -> Reservation | None:
    """A reservation for a job its queue's quota holds back: boards as :func:`reserve` finds them,
    starting no sooner than enough of its own queue's running jobs have ended to make room."""
    if ledger.refusal(job.queue, gens, job.boards) is not None:
        return None  # it can never fit its queue: nothing to wait for
    own = [r for r in ending.jobs if r.queue == job.queue]
    need, quota_at = job.boards - headroom, snap.now
    for r in own:
        if need <= 0:
            break
        need -= sum(1 for b in r.boards if gen_of.get(b) in gens)
        quota_at = r.expected_end
    if need > 0 or quota_at == float("inf"):
        return None
    res = reserve(snap, pool, job, None, ending)
    if res is None:
        return None
    return Reservation(job.id, res.board_ids, max(res.expected_start, quota_at))


def _usable_free(pool: Pool, ledger: QuotaLedger, queues: Iterable[str]) -> bool:
    """Whether some queue with jobs waiting may still take one of the free boards (by quota)."""
    queues = sorted(queues)
    seen: set[str] = set()
    for b in pool.free:
        g = pool.gen_of[b]
        if g not in seen:
            seen.add(g)
            if any(ledger.headroom(q, g) > 0 for q in queues):
                return True
    return False


def _by_gen(boards: Sequence[str], gen_of: Mapping[str, str]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for b in boards:
        out[gen_of[b]] += 1
    return out


def _caps(ledger: QuotaLedger, queue: str, gens: frozenset[str]) -> dict[str, int] | None:
    caps = {g: ledger.headroom(queue, g) for g in sorted(gens)}
    return None if all(c >= UNLIMITED for c in caps.values()) else caps


def _fit_reason(
    pool: Pool, job: PendingJob, held: Mapping[str, Reservation], short: bool, any_match: dict[Constraints, bool]
) -> str:
    idx = pool.index(job.shape.constraints)
    free = idx.total
    want = f"{job.boards} board(s) ({job.shape.constraints.describe()})"
    c = job.shape.constraints
    if c not in any_match:
        any_match[c] = any(c.admits(b) for b in pool.boards.values())
    if not any_match[c]:
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
