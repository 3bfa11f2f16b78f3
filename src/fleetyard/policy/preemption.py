"""Preemption (pure): which running jobs a waiting job may take boards from, and the fewest it needs.

A job that does not fit may preempt: first the jobs of queues of its cohort that borrowed beyond
their nominal quota in the generations it wants when the pass began (its queue reclaims what it
lent, within its own nominal quota), then lower (priority, rank) jobs of its own queue, whose boards count as
room in its quota (as Kueue's ``withinClusterQueue: LowerPriority``: a queue whose quota is spent
runs its urgent job in place of a lesser one); within each, the lowest priority and then the
least work lost first (board-seconds run so far: among jobs of one size, the newest). Only as many
as it needs.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import NamedTuple

from fleetyard.domain.spec import Placement
from fleetyard.policy.placement import Constraints, Freeing, Pool
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.snapshot import PendingJob, RunningJob

__all__ = ["Found", "Victims", "lost_budget", "may_be_preempted", "preempt_reason", "victims_for"]


class Victims:
    """Who a job may preempt, in order: running jobs of queues that borrow beyond their nominal
    quota (reclaimed by another queue), then lower (priority, rank) jobs of the job's own queue;
    within each, the lowest priority and then the least work lost. Built once per pass."""

    def __init__(
        self,
        running: Sequence[RunningJob],
        gen_of: Mapping[str, str],
        borrowing: set[tuple[str, str]],
        now: float = 0.0,
    ) -> None:
        """``borrowing``: (queue, generation) beyond nominal when the pass began. A queue that
        borrows only by this pass's bindings is not reclaimed from: its jobs of before are within
        its quota; the next pass takes back the boards it borrowed, newest first."""
        self._gen_of = gen_of
        self.borrowing = borrowing
        self.now = now
        self._order = _victim_order(now)
        self._open: dict[str, list[RunningJob]] = defaultdict(list)  # queue -> preemptible running jobs
        for r in running:
            if may_be_preempted(r, now):
                self._open[r.queue].append(r)
        self.queues = set(self._open)
        self._by_gen: dict[str, dict[str, list[RunningJob]]] = {}  # built per queue as asked
        self.matching: dict[tuple[int, Constraints], list[str]] = {}  # boards do not change in a pass
        self._held: dict[int, Counter[str]] = {}

    def _of(self, queue: str) -> dict[str, list[RunningJob]]:
        """Generation -> the queue's preemptible running jobs holding boards of it, in victim order."""
        by_gen = self._by_gen.get(queue)
        if by_gen is None:
            by_gen = self._by_gen[queue] = defaultdict(list)
            for r in sorted(self._open[queue], key=self._order):
                # Each list fills in victim order, whatever order the generations come in.
                for g in set(filter(None, map(self._gen_of.get, r.boards))):
                    by_gen[g].append(r)
        return by_gen

    def candidates(self, ledger: QuotaLedger, job: PendingJob, gens: Sequence[str]) -> Iterator[RunningJob]:
        """Those holding boards of ``gens``: borrowers of another queue (in a generation it
        borrows), then lower-priority jobs of the job's own queue; each once."""
        seen: set[int] = set()
        # Only a queue of its cohort borrowed from it (as Kueue reclaims within a cohort).
        lenders = [
            self._of(q)[g]
            for q in sorted(self.queues - {job.queue})
            if ledger.cohort_mates(job.queue, q)
            for g in gens
            if (q, g) in self.borrowing and ledger.borrowing(q, g) > 0 and g in self._of(q)
        ]
        mine = self._of(job.queue) if job.queue in self.queues else {}
        own = [mine[g] for g in gens if g in mine]
        for r in heapq.merge(*lenders, key=self._order):
            if r.id not in seen:
                seen.add(r.id)
                yield r
        for r in heapq.merge(*own, key=self._order):
            if (r.priority, r.rank) >= (job.priority, job.rank):
                break
            if r.id not in seen:
                seen.add(r.id)
                yield r

    def own_generations(self, queue: str) -> set[str]:
        """The generations the queue's preemptible running jobs hold boards of."""
        return set(self._of(queue)) if queue in self.queues else set()

    def held(self, r: RunningJob) -> Counter[str]:
        """Generation -> boards ``r`` holds: the room in its queue's quota its stop makes."""
        held = self._held.get(r.id)
        if held is None:
            held = self._held[r.id] = Counter(g for g in map(self._gen_of.get, r.boards) if g)
        return held

    def boards(self, pool: Pool, r: RunningJob, c: Constraints) -> list[str]:
        key = (r.id, c)
        if key not in self.matching:
            self.matching[key] = pool.matching(c, r.boards)
        return self.matching[key]


def may_be_preempted(r: RunningJob, now: float) -> bool:
    """Preemptible, not stopping already, and not protected (preempted before, started again lately)."""
    return r.preemptible and r.preempted_for is None and r.protected_until <= now


def _victim_order(now: float) -> Callable[[RunningJob], tuple[int, int, float, float, int]]:
    """Lowest (priority, rank) first, then the least work lost: a 256-board gang hours in is
    the last to go for a host's worth of boards, not the first because it started last."""

    def order(r: RunningJob) -> tuple[int, int, float, float, int]:
        return (r.priority, r.rank, len(r.boards) * max(0.0, now - r.started_at), -r.started_at, r.id)

    return order


_Entry = tuple[RunningJob, list[str], "Counter[str] | None"]  # a victim, its boards, room it makes


class Found(NamedTuple):
    """What a search for victims found: ``victims`` (none: not allowed, or not enough), and
    whether the work the job may throw away decided it (``by_budget``): then a job allowed to
    throw away more might find some; else no job of its queue, class and shape, no smaller, would."""

    victims: list[RunningJob]
    by_budget: bool = False


GROUPS_TRIED = 4  # hosts (racks) a gang that must be on one tries, cheapest first, before the plain search


def victims_for(
    pool: Pool,
    ledger: QuotaLedger,
    job: PendingJob,
    gens: frozenset[str],
    gen_of: Mapping[str, str],
    taken: set[int],
    victims: Victims,
) -> Found:
    """The fewest running jobs to stop so that ``job`` fits, or none (not allowed, or not enough).

    Its queue's quota holds as for any placement, but what victims of its own queue hold counts
    as room in it; boards borrowed by another queue are reclaimed only within its nominal quota.
    A job that must be on one host (rack) takes the host (rack) where its victims lose the least
    work, not the first one that candidates in victim order happen to complete. No job throws
    away more work than it can do itself (its boards times its time limit): an 8-board job does
    not stop a 256-board gang hours in, it waits for boards to free; and no more than its class
    allows (:func:`lost_budget`): a batch job stops only work started lately."""
    q = job.queue
    headroom = {g: ledger.headroom(q, g) for g in sorted(gens)}
    own = victims.own_generations(q)
    room = {g: n for g, n in headroom.items() if n > 0 or g in own}
    if not room:
        return Found([])
    nominal = {g: ledger.spec(q).nominal_of(g) - ledger.usage(q, g) for g in room}
    reclaim = {g for g, n in nominal.items() if n > 0}
    c = job.shape.constraints
    base = pool.index(c).total
    made: Counter[str] = Counter()  # room its own queue's victims make, per generation
    most_lost = lost_budget(job)
    over_budget = False  # some candidate alone throws away more than the job can do

    def candidates() -> Iterator[_Entry]:
        nonlocal over_budget
        for r in victims.candidates(ledger, job, list(room)):
            if r.id in taken or r.id == job.id:
                continue
            if _lost_by(r, victims.now) > most_lost:
                over_budget = True  # never chosen
                continue
            if r.queue == q:
                mine = [b for b in victims.boards(pool, r, c) if gen_of[b] in room]
                held: Counter[str] | None = victims.held(r)
            else:
                mine = [b for b in victims.boards(pool, r, c) if gen_of[b] in reclaim]
                held = None
            if mine:
                yield r, mine, held

    def fits(reclaiming: bool, n_freed: int) -> tuple[str, ...] | None:
        """Where the job runs if the chosen stop (their boards given to the pool), or None.
        ``reclaiming``: some are of another queue; then the job must fit within its own nominal quota."""
        if base + n_freed < job.boards:
            return None
        limit = {g: max(0, min(job.boards, (nominal if reclaiming else room)[g] + made[g])) for g in room}
        return pool.pick(job.shape, job.boards, caps=limit) if sum(limit.values()) >= job.boards else None

    # The victims' boards are given to the pool once they could complete the job's shape, and all
    # taken back at the end: giving and taking back every board per candidate made a 256-board
    # gang's search quadratic.
    freeing = Freeing(pool, job.shape, job.boards)
    chosen: list[_Entry] = []
    got: tuple[str, ...] | None = None
    # A job that must be on one host (rack) looks at every candidate first; the rest stop at the
    # first that completes it.
    grouped = freeing.placement is not Placement.ANY
    entries: Iterable[_Entry] = list(candidates()) if grouped else candidates()
    try:
        if grouped:
            for group in _cheapest_groups(pool, freeing, list(entries), victims.now, most_lost):
                freeing.add([b for _, mine, _ in group for b in mine])
                freeing.flush()
                for _, _, held in group:
                    if held:
                        made.update(held)
                got = fits(any(held is None for _, _, held in group), len(freeing.given))
                if got is not None:
                    chosen = group
                    break
                freeing.take_back()
                made.clear()
        if got is None:  # in victim order, until the job fits
            reclaiming = False  # some chosen are of another queue
            for entry in entries:
                chosen.append(entry)
                reclaiming = reclaiming or entry[2] is None
                if entry[2]:
                    made.update(entry[2])
                if freeing.add(entry[1]):
                    freeing.flush()
                    got = fits(reclaiming, len(freeing.given))
                    if got is not None:
                        break
        if got is None:
            return Found([], over_budget)
        # Keep only those needed. Those with no board where it would run go at once (a gang's
        # search may choose hundreds on other hosts first), if it still fits without them...
        freed = freeing.given
        runs_on = set(got)
        needed = [e for e in chosen if not runs_on.isdisjoint(e[1])]
        if len(needed) < len(chosen):
            spare = [e for e in chosen if runs_on.isdisjoint(e[1])]
            spare_boards = [b for e in spare for b in e[1]]
            spare_made = sum((e[2] for e in spare if e[2] is not None), Counter())
            pool.take(spare_boards)
            made.subtract(spare_made)
            if fits(any(e[2] is None for e in needed), len(freed) - len(spare_boards)) is not None:
                chosen = needed
                gone = set(spare_boards)
                freed = freeing.given = [b for b in freed if b not in gone]
            else:
                pool.give(spare_boards)
                made.update(spare_made)
        # ... then the last-chosen first, one at a time, while it still fits.
        for entry in list(reversed(chosen)):
            _, mine, held = entry
            pool.take(mine)
            if held:
                made.subtract(held)
            if fits(any(e[2] is None for e in chosen if e is not entry), len(freed) - len(mine)) is not None:
                chosen.remove(entry)
                drop = set(mine)
                freed = freeing.given = [b for b in freed if b not in drop]
            else:
                pool.give(mine)
                if held:
                    made.update(held)
        if _lost(chosen, victims.now) > most_lost:
            return Found([], True)  # it would throw away more than it can itself do: it waits instead
        return Found([r for r, _, _ in chosen])
    finally:
        freeing.take_back()


def lost_budget(job: PendingJob) -> float:
    """The most work (board-seconds) the jobs ``job`` preempts may lose altogether: what it can do
    itself (its boards times its time limit), and no more than its class allows per board it needs
    (:attr:`~fleetyard.policy.queues.PriorityClass.max_lost_s`)."""
    per_board = job.time_limit_s if job.max_lost_s is None else min(job.time_limit_s, job.max_lost_s)
    return job.boards * per_board


def _lost_by(r: RunningJob, now: float) -> float:
    """The board-seconds a running job has run: the work its preemption throws away."""
    return len(r.boards) * max(0.0, now - r.started_at)


def _lost(entries: Sequence[_Entry], now: float) -> float:
    return sum(_lost_by(r, now) for r, _, _ in entries)


def _cheapest_groups(
    pool: Pool, freeing: Freeing, entries: Sequence[_Entry], now: float, most_lost: float
) -> list[list[_Entry]]:
    """For a job that must be on one host (rack): per host (rack), the first candidates in victim
    order that free enough of it; the few groups that lose the least work first (board-seconds
    run), among those whose worst victim comes earliest in victim order."""
    k, idx = freeing.k, freeing.idx
    by_host = freeing.placement is Placement.SAME_HOST
    free_in: Mapping[str, int] = {h: len(bs) for h, bs in idx.by_host.items()} if by_host else idx.rack_count
    groups: dict[str, list[_Entry]] = defaultdict(list)
    count: Counter[str] = Counter()
    worst: dict[str, tuple[bool, int, int]] = {}  # group -> its worst victim: (own queue, priority, rank)
    lost: dict[str, float] = defaultdict(float)
    for entry in entries:
        r, mine, held = entry
        band = (held is not None, r.priority, r.rank)
        here = Counter(pool.boards[b].host if by_host else pool.boards[b].rack for b in mine)
        for g, n in here.items():
            if free_in.get(g, 0) + count[g] >= k:
                continue  # enough already
            groups[g].append(entry)
            count[g] += n
            worst[g] = max(worst.get(g, band), band)
            lost[g] += _lost_by(r, now)
    complete = [g for g in groups if free_in.get(g, 0) + count[g] >= k and lost[g] <= most_lost]
    # Borrowers of other queues before the queue's own lower-priority jobs, lower priority first
    # (victim order), then the least work lost; a few, in case the queue's caps turn one away.
    complete.sort(key=lambda g: (worst[g], lost[g], g))
    return [groups[g] for g in complete[:GROUPS_TRIED]]


def preempt_reason(ledger: QuotaLedger, victim: RunningJob, job: PendingJob, gen_of: Mapping[str, str]) -> str:
    if victim.queue != job.queue:
        gens = sorted({gen_of[b] for b in victim.boards if b in gen_of})
        return (
            f"preempted for job {job.id}: queue {victim.queue} borrows beyond its nominal quota of "
            f"{', '.join(gens)} and queue {job.queue} reclaims it"
        )
    return f"preempted for job {job.id} of higher priority in queue {job.queue}"
