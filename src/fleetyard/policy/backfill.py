"""Backfill (pure): the reservation of the job at the head of the line that does not fit.

The boards that free soonest for it (free ones now, then running jobs' boards in order of their
expected end) are held for it, with the time it should start; a later job may use them only if
its time limit ends before then.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from fleetyard.policy.placement import Constraints, Freeing, Pool
from fleetyard.policy.snapshot import PendingJob, Reservation, RunningJob, Snapshot

__all__ = ["Ending", "reserve"]


class Ending:
    """The running jobs not already told to stop, by expected end (then id), and which of their
    boards admit a constraint: built once per pass, however many jobs it reserves for."""

    def __init__(self, running: Sequence[RunningJob]) -> None:
        self.jobs = sorted((r for r in running if r.preempted_for is None), key=lambda r: (r.expected_end, r.id))
        self._matching: dict[tuple[int, Constraints], list[str]] = {}

    def boards(self, pool: Pool, r: RunningJob, c: Constraints) -> list[str]:
        """``r``'s boards that admit ``c`` and are not free (the boards do not change in a pass)."""
        key = (r.id, c)
        mine = self._matching.get(key)
        if mine is None:
            mine = self._matching[key] = [i for i in pool.matching(c, r.boards) if i not in pool.free]
        return mine


def reserve(
    snap: Snapshot,
    pool: Pool,
    job: PendingJob,
    caps: Mapping[str, int] | None,
    ending: Ending | None = None,
) -> Reservation | None:
    """The boards that free soonest for ``job``, and when: free ones now, then running jobs' boards
    in order of their expected end (``ending``, if the caller has it), until the job fits."""
    c = job.shape.constraints
    if ending is None:
        ending = Ending(snap.running)
    if pool.index(c).total >= job.boards:
        got = pool.pick(job.shape, job.boards, caps=caps)
        if got is not None:
            return Reservation(job.id, got, snap.now)
    if not pool.caps_admit(job.shape, job.boards, caps):
        return None
    # The boards of jobs that end are counted as they come, given to the pool only when they
    # could complete the shape (a pick is tried then), and all taken back at the end: on a full
    # fleet that is a few picks per reservation, and no index moves for most running jobs.
    freeing = Freeing(pool, job.shape, job.boards)
    try:
        for r in ending.jobs:
            mine = ending.boards(pool, r, c)
            if not mine or not freeing.add(mine) or r.expected_end == math.inf:
                continue
            freeing.flush()
            got = pool.pick(job.shape, job.boards, caps=caps)
            if got is not None:
                return Reservation(job.id, got, max(r.expected_end, snap.now))
        return None
    finally:
        freeing.take_back()
