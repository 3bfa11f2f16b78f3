"""Backfill (pure): the reservation of the job at the head of the line that does not fit.

The boards that free soonest for it (free ones now, then running jobs' boards in order of their
expected end) are held for it, with the time it should start; a later job may use them only if
its time limit ends before then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fleetyard.policy.placement import Pool
from fleetyard.policy.snapshot import PendingJob, Reservation, RunningJob, Snapshot

__all__ = ["ending_order", "reserve"]


def ending_order(running: Sequence[RunningJob]) -> list[RunningJob]:
    """The running jobs not already told to stop, by expected end (then id)."""
    return sorted((r for r in running if r.preempted_for is None), key=lambda r: (r.expected_end, r.id))


def reserve(
    snap: Snapshot,
    pool: Pool,
    job: PendingJob,
    caps: Mapping[str, int] | None,
    ending: Sequence[RunningJob] | None = None,
) -> Reservation | None:
    """The boards that free soonest for ``job``, and when: free ones now, then running jobs' boards
    in order of their expected end (``ending``: :func:`ending_order`, if the caller has it), until the job fits."""
    c = job.shape.constraints
    if ending is None:
        ending = ending_order(snap.running)
    freed: list[str] = []
    base = pool.index(c).total
    if base >= job.boards:
        got = pool.pick(job.shape, job.boards, caps=caps)
        if got is not None:
            return Reservation(job.id, got, snap.now)
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
