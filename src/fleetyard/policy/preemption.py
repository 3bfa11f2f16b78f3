"""Preemption (pure): which running jobs a waiting job may take boards from, and the fewest it needs.

A job that does not fit may preempt: first the jobs of queues of its cohort that borrowed beyond
their nominal quota in the generations it wants when the pass began (its queue reclaims what it
lent, within its own nominal quota), then lower (priority, rank) jobs of its own queue, whose boards count as
room in its quota (as Kueue's ``withinClusterQueue: LowerPriority``: a queue whose quota is spent
runs its urgent job in place of a lesser one); within each, the lowest priority and then the
newest first. Only as many as it needs.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence

from fleetyard.policy.placement import Constraints, Pool
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.snapshot import PendingJob, RunningJob

__all__ = ["Victims", "fits_with", "may_be_preempted", "preempt_reason", "victims_for"]


class Victims:
    """Who a job may preempt, in order: running jobs of queues that borrow beyond their nominal
    quota (reclaimed by another queue), then lower (priority, rank) jobs of the job's own queue;
    within each, the lowest priority and then the newest first. Built once per pass."""

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
        self._open: dict[str, list[RunningJob]] = defaultdict(list)  # queue -> preemptible running jobs
        for r in running:
            if may_be_preempted(r, now):
                self._open[r.queue].append(r)
        self.queues = set(self._open)
        self._by_gen: dict[str, dict[str, list[RunningJob]]] = {}  # built per queue as asked
        self.matching: dict[tuple[int, Constraints], list[str]] = {}  # boards do not change in a pass

    def _of(self, queue: str) -> dict[str, list[RunningJob]]:
        """Generation -> the queue's preemptible running jobs holding boards of it, in victim order."""
        by_gen = self._by_gen.get(queue)
        if by_gen is None:
            by_gen = self._by_gen[queue] = defaultdict(list)
            for r in sorted(self._open[queue], key=_victim_order):
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
        for r in heapq.merge(*lenders, key=_victim_order):
            if r.id not in seen:
                seen.add(r.id)
                yield r
        for r in heapq.merge(*own, key=_victim_order):
            if (r.priority, r.rank) >= (job.priority, job.rank):
                break
            if r.id not in seen:
                seen.add(r.id)
                yield r

    def own_generations(self, queue: str) -> set[str]:
        """The generations the queue's preemptible running jobs hold boards of."""
        return set(self._of(queue)) if queue in self.queues else set()

    def boards(self, pool: Pool, r: RunningJob, c: Constraints) -> list[str]:
        key = (r.id, c)
        if key not in self.matching:
            self.matching[key] = pool.matching(c, r.boards)
        return self.matching[key]


def may_be_preempted(r: RunningJob, now: float) -> bool:
    """Preemptible, not stopping already, and not protected (preempted before, started again lately)."""
    return r.preemptible and r.preempted_for is None and r.protected_until <= now


def _victim_order(r: RunningJob) -> tuple[int, int, float, int]:
    return (r.priority, r.rank, -r.started_at, r.id)


def victims_for(
    pool: Pool,
    ledger: QuotaLedger,
    job: PendingJob,
    gens: frozenset[str],
    gen_of: Mapping[str, str],
    taken: set[int],
    victims: Victims,
) -> list[RunningJob]:
    """The fewest running jobs to stop so that ``job`` fits, or [] (not allowed, or not enough).

    Its queue's quota holds as for any placement, but what victims of its own queue hold counts
    as room in it; boards borrowed by another queue are reclaimed only within its nominal quota."""
    q = job.queue
    headroom = {g: ledger.headroom(q, g) for g in sorted(gens)}
    own = victims.own_generations(q)
    room = {g: n for g, n in headroom.items() if n > 0 or g in own}
    if not room:
        return []
    nominal = {g: ledger.spec(q).nominal_of(g) - ledger.usage(q, g) for g in room}
    reclaim = {g for g, n in nominal.items() if n > 0}
    c = job.shape.constraints
    base = pool.index(c).total
    chosen: list[tuple[RunningJob, list[str], Counter[str] | None]] = []  # (victim, its boards, room it makes)
    freed: list[str] = []
    made: Counter[str] = Counter()  # room its own queue's victims make, per generation

    def fits(chosen: Sequence[tuple[RunningJob, list[str], Counter[str] | None]], boards: Sequence[str]) -> bool:
        # Taking another queue's boards, the job must fit within its own nominal quota.
        reclaiming = any(held is None for _, _, held in chosen)
        limit = {g: max(0, min(job.boards, (nominal if reclaiming else room)[g] + made[g])) for g in room}
        return sum(limit.values()) >= job.boards and fits_with(pool, job, limit, boards)

    for r in victims.candidates(ledger, job, list(room)):
        if r.id in taken or r.id == job.id:
            continue
        held: Counter[str] | None = None
        if r.queue == q:
            mine = [b for b in victims.boards(pool, r, c) if gen_of[b] in room]
            held = Counter(gen_of[b] for b in r.boards if b in gen_of)
        else:
            mine = [b for b in victims.boards(pool, r, c) if gen_of[b] in reclaim]
        if not mine:
            continue
        chosen.append((r, mine, held))
        freed += mine
        made += held or Counter()
        if base + len(freed) >= job.boards and fits(chosen, freed):
            break
    else:
        return []
    # Keep only those needed: drop the last-chosen first while it still fits.
    for entry in list(reversed(chosen)):
        r, mine, held = entry
        drop = set(mine)
        rest = [b for b in freed if b not in drop]
        made -= held or Counter()
        if fits([e for e in chosen if e is not entry], rest):
            chosen.remove(entry)
            freed = rest
        else:
            made += held or Counter()
    return [r for r, _, _ in chosen]


def fits_with(pool: Pool, job: PendingJob, caps: Mapping[str, int], extra: Sequence[str]) -> bool:
    pool.give(extra)
    try:
        return pool.pick(job.shape, job.boards, caps=caps) is not None
    finally:
        pool.take(extra)


def preempt_reason(ledger: QuotaLedger, victim: RunningJob, job: PendingJob, gen_of: Mapping[str, str]) -> str:
    if victim.queue != job.queue:
        gens = sorted({gen_of[b] for b in victim.boards if b in gen_of})
        return (
            f"preempted for job {job.id}: queue {victim.queue} borrows beyond its nominal quota of "
            f"{', '.join(gens)} and queue {job.queue} reclaims it"
        )
    return f"preempted for job {job.id} of higher priority in queue {job.queue}"
