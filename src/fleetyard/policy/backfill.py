"""Backfill (pure): the reservation of the job at the head of the line that does not fit.

The boards that free soonest for it (free ones now, then running jobs' boards in order of their
expected end) are held for it, with the time it should start; a later job may use them only if
its time limit ends before then.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence

from fleetyard.domain.spec import Placement
from fleetyard.policy.placement import Constraints, Freeing, Pool, group_of
from fleetyard.policy.snapshot import PendingJob, Reservation, RunningJob, Snapshot

__all__ = ["Ending", "reserve"]


_END_ORDER = operator.attrgetter("expected_end", "id")


class Ending:
    """The running jobs not already told to stop, by expected end (then id), and which of their
    boards admit a constraint: built once per pass, however many jobs it reserves for."""

    def __init__(self, running: Sequence[RunningJob]) -> None:
        self.jobs = sorted((r for r in running if r.preempted_for is None), key=_END_ORDER)
        self._columns: dict[Constraints, list[list[str]]] = {}

    def boards(self, pool: Pool, c: Constraints) -> list[list[str]]:
        """Per job (as :attr:`jobs`), its boards that admit ``c`` and are not free (the boards do
        not change in a pass): one sweep per constraint and pass."""
        column = self._columns.get(c)
        if column is None:
            admitted, free = pool.admitted(c), pool.free
            column = self._columns[c] = [[i for i in r.boards if i in admitted and i not in free] for r in self.jobs]
        return column


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
    column = ending.boards(pool, c)
    first = _first_complete(pool, freeing, ending, column)
    if first is None:
        return None
    at, ready = first
    # The first pick, at the first job whose end could complete the shape, on the boards that
    # complete it: where the search below would first pick, and most often where it ends.
    pool.give(ready)
    got = pool.pick(job.shape, job.boards, caps=caps)
    pool.take(ready)
    if got is not None:
        return Reservation(job.id, got, max(ending.jobs[at].expected_end, snap.now))
    try:
        freeing.add([b for mine in column[: at + 1] for b in mine])
        for r, mine in zip(ending.jobs[at + 1 :], column[at + 1 :], strict=True):
            if not mine or not freeing.add(mine) or r.expected_end == math.inf:
                continue
            freeing.flush()
            got = pool.pick(job.shape, job.boards, caps=caps)
            if got is not None:
                return Reservation(job.id, got, max(r.expected_end, snap.now))
        return None
    finally:
        freeing.take_back()


def _first_complete(
    pool: Pool, freeing: Freeing, ending: Ending, column: Sequence[Sequence[str]]
) -> tuple[int, list[str]] | None:
    """The position in ``ending.jobs`` of the first job whose end could complete ``freeing``'s
    shape by count and topology (as :meth:`Freeing.add` judges it), and the boards ending by
    then that could take part (of the hosts, or racks, it completes); or None. A 256-board gang's
    reservation counts a thousand jobs' boards here, not through the pool's books."""
    k, idx, placement = freeing.k, freeing.idx, freeing.placement
    boards = pool.boards
    if placement is Placement.ANY:
        total = idx.total
        for i, (r, mine) in enumerate(zip(ending.jobs, column, strict=True)):
            if r.expected_end == math.inf:
                return None
            total += len(mine)
            if total >= k:
                return i, [b for m in column[: i + 1] for b in m]
        return None
    counted: dict[str, list[str]] = {}
    for i, (r, mine) in enumerate(zip(ending.jobs, column, strict=True)):
        if r.expected_end == math.inf:
            return None
        complete: list[str] = []
        for b in mine:
            g = group_of(boards[b], placement)
            ids = counted.get(g)
            if ids is None:
                ids = counted[g] = []
            ids.append(b)
            if len(ids) + idx.free_in(g, placement) >= k:
                complete.append(g)
        if complete:
            return i, [b for g in dict.fromkeys(complete) for b in counted[g]]
    return None
