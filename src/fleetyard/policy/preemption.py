"""Preemption (pure): which running jobs a waiting job may take boards from, and the fewest it needs.

A job within its queue's nominal quota that does not fit may preempt: first the jobs of queues
that borrow beyond their nominal quota in the generations it wants (another queue reclaims
what it lent), then lower (priority, rank) jobs of its own queue; within each, the lowest
priority and then the newest first. Only as many as it needs.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence

from fleetyard.policy.placement import Constraints, Pool
from fleetyard.policy.queues import QuotaLedger
from fleetyard.policy.snapshot import PendingJob, RunningJob

__all__ = ["Victims", "fits_with", "preempt_reason", "victims_for"]


class Victims:
    """Who a job may preempt, in order: running jobs of queues that borrow beyond their nominal
    quota (reclaimed by another queue), then lower (priority, rank) jobs of the job's own queue;
    within each, the lowest priority and then the newest first. Built once per pass."""

    def __init__(self, running: Sequence[RunningJob], gen_of: Mapping[str, str]) -> None:
        self._gen_of = gen_of
        self._open: dict[str, list[RunningJob]] = defaultdict(list)  # queue -> preemptible running jobs
        for r in running:
            if r.preemptible and r.preempted_for is None:
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
        lenders = [
            self._of(q)[g]
            for q in sorted(self.queues - {job.queue})
            for g in gens
            if ledger.borrowing(q, g) > 0 and g in self._of(q)
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

    def boards(self, pool: Pool, r: RunningJob, c: Constraints) -> list[str]:
        key = (r.id, c)
        if key not in self.matching:
            self.matching[key] = pool.matching(c, r.boards)
        return self.matching[key]


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
    """The fewest running jobs to stop so that ``job`` fits, or [] (not allowed, or not enough)."""
    nominal_gens = [g for g in sorted(gens) if ledger.within_nominal(job.queue, g, job.boards)]
    if not nominal_gens:
        return []  # only a job within its nominal quota may preempt
    caps = {g: job.boards for g in nominal_gens}
    c = job.shape.constraints
    base = pool.index(c).total
    chosen: list[tuple[RunningJob, list[str]]] = []
    freed: list[str] = []
    for r in victims.candidates(ledger, job, nominal_gens):
        if r.id in taken or r.id == job.id:
            continue
        mine = [b for b in victims.boards(pool, r, c) if gen_of[b] in caps]
        if not mine:
            continue
        chosen.append((r, mine))
        freed += mine
        if base + len(freed) >= job.boards and fits_with(pool, job, caps, freed):
            break
    else:
        return []
    # Keep only those needed: drop the last-chosen first while it still fits.
    for r, mine in list(reversed(chosen)):
        drop = set(mine)
        rest = [b for b in freed if b not in drop]
        if fits_with(pool, job, caps, rest):
            chosen.remove((r, mine))
            freed = rest
    return [r for r, _ in chosen]


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
