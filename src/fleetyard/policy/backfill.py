"""Backfill (pure): the reservation of the job at the head of the line that does not fit.

The boards that free soonest for it (free ones now, then running jobs' boards in order of their
expected end) are held for it, with the time it should start; a later job may use them only if
its time limit ends before then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from fleetyard.domain.spec import Placement
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
    idx = pool.index(c)
    base = idx.total
    if base >= job.boards:
        got = pool.pick(job.shape, job.boards, caps=caps)
        if got is not None:
            return Reservation(job.id, got, snap.now)
    placement = job.shape.placement if job.shape.required else Placement.ANY
    # The boards of jobs that end are given to the pool as they come (and all taken back at the
    # end), and a pick is tried only when the newly freed boards could complete the shape: on
    # a full fleet that is a few picks per reservation, not one per running job.
    freed: list[str] = []
    try:
        for r in ending:
            mine = [i for i in pool.matching(c, r.boards) if i not in pool.free]
            if not mine:
                continue
            pool.give(mine)
            freed += mine
            if base + len(freed) < job.boards or r.expected_end == float("inf"):
                continue
            if placement is Placement.SAME_HOST and not any(
                len(idx.by_host.get(pool.boards[i].host, ())) >= job.boards for i in mine
            ):
                continue
            if placement is Placement.SAME_RACK and not any(
                idx.rack_count.get(pool.boards[i].rack, 0) >= job.boards for i in mine
            ):
                continue
            got = pool.pick(job.shape, job.boards, caps=caps)
            if got is not None:
                return Reservation(job.id, got, max(r.expected_end, snap.now))
        return None
    finally:
        pool.take(freed)
