"""The line (pure): the pending jobs in the order the scheduler considers them, kept across passes.

The order: priority class (higher first); within a class, fair share (the queue that used less of
its share by decayed usage first); then the job's own ``priority``; then age; then id. Usage
moves every pass, so the order between queues is decided when the line is walked; within one
(class, queue) it never changes, so each such group is a sorted list that a new job joins, or a
job leaves, in O(log n). A walk costs what it looks at: a pass that stops after 2,000 jobs of
100,000 pays for 2,000.

    line = Line(pending)              # or Line() and line.add(job) as jobs come
    for job in line.walk(queues, usage): ...
"""

from __future__ import annotations

import heapq
import operator
from collections import defaultdict
from collections.abc import Iterable, Iterator, KeysView, Mapping

from sortedcontainers import SortedList

from fleetyard.policy.fairshare import share_key
from fleetyard.policy.queues import QueueSpec
from fleetyard.policy.snapshot import PendingJob

__all__ = ["Line"]

# (-rank, submitted_at, id, job): the order within a (class, queue); ids are unique, so jobs are
# never compared, and a walk takes them straight from the sorted list.
_Entry = tuple[int, float, int, PendingJob]


def _entry(job: PendingJob) -> _Entry:
    return (-job.rank, job.submitted_at, job.id, job)


class Line:
    """The pending jobs, grouped by (class value, queue), each group in order."""

    def __init__(self, jobs: Iterable[PendingJob] = ()) -> None:
        self._jobs: dict[int, PendingJob] = {}
        grouped: dict[tuple[int, str], list[_Entry]] = defaultdict(list)
        for job in jobs:
            if job.id in self._jobs:
                raise ValueError(f"job {job.id} is in the line twice")
            self._jobs[job.id] = job
            grouped[job.priority, job.queue].append(_entry(job))
        self._groups: dict[tuple[int, str], SortedList] = {g: SortedList(keys) for g, keys in grouped.items()}

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __iter__(self) -> Iterator[PendingJob]:
        """The jobs in no particular order (as they joined)."""
        return iter(self._jobs.values())

    def ids(self) -> KeysView[int]:
        return self._jobs.keys()

    def get(self, job_id: int) -> PendingJob | None:
        return self._jobs.get(job_id)

    def queues(self) -> set[str]:
        return {q for _, q in self._groups}

    def add(self, job: PendingJob) -> None:
        """Join the line, or take the place a changed job (class, rank) now has."""
        old = self._jobs.get(job.id)
        if old == job:
            return
        if old is not None:
            self.discard(job.id)
        self._jobs[job.id] = job
        group = self._groups.get((job.priority, job.queue))
        if group is None:
            group = self._groups[job.priority, job.queue] = SortedList()
        group.add(_entry(job))

    def discard(self, job_id: int) -> None:
        """Leave the line (bound, cancelled); not there: nothing."""
        job = self._jobs.pop(job_id, None)
        if job is None:
            return
        group = self._groups[job.priority, job.queue]
        group.remove(_entry(job))
        if not group:
            del self._groups[job.priority, job.queue]

    def walk(self, queues: Mapping[str, QueueSpec], usage: Mapping[str, float]) -> Iterator[PendingJob]:
        """The jobs in order, lazily. The line must not change while it is walked."""
        shares = {q: share_key(usage.get(q, 0.0), weight(queues.get(q) or QueueSpec(q))) for q in self.queues()}
        by_class: dict[int, list[str]] = defaultdict(list)
        for priority, q in self._groups:
            by_class[priority].append(q)
        for priority in sorted(by_class, reverse=True):
            qs = sorted(by_class[priority], key=lambda q: (shares[q], q))
            i = 0
            while i < len(qs):
                # Queues of equal share interleave by (rank, age, id); else the lower share goes first.
                j = i + 1
                while j < len(qs) and shares[qs[j]] == shares[qs[i]]:
                    j += 1
                groups = [self._groups[priority, q] for q in qs[i:j]]
                yield from map(_job_of, groups[0] if len(groups) == 1 else heapq.merge(*groups))
                i = j


_job_of = operator.itemgetter(3)


def weight(spec: QueueSpec) -> float:
    """A queue's fair-share weight: its nominal quota in boards (1 for an unlimited queue)."""
    return float(sum(spec.nominal.values())) if spec.nominal else 1.0
