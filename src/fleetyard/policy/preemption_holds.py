"""What a preemption leaves from one scheduling pass to the next (pure, over an explicit time).

A pass that preempts cannot bind the job it preempted for at once: its victims must stop first.
Between passes this keeps

- the victims still stopping (attempt -> the job they stop for, their boards); once an attempt no
  longer runs, its boards are **held** for that job (:attr:`Snapshot.held_for`) until it binds,
  leaves the line, or :data:`HOLD_FREED_S` passes: else the next pass gives them to a borrower
  ahead in fair-share order and the job preempts again, pass after pass;
- the free boards a pass kept for a preempting job besides its victims' (:attr:`Plan.kept`);
- the **protection** of jobs preempted before: their new attempt is not preempted again until
  ``protect_s`` after it started (:attr:`RunningJob.protected_until`), and a job preempted
  ``max_preemptions`` times is not preempted again at all: no job is thrown back and forth, and
  none loses its work more than that many times, however long it runs;
- the jobs whose search for victims found none (:attr:`Plan.searched_in_vain`): they do not
  search again for about ``retry_s`` (:attr:`Snapshot.search_after`). A search walks the running
  jobs of every host it could use; the same gangs failing it pass after pass were most of a busy
  fleet's pass time (``bench/sched_trace.py``), for an answer that seldom changes in a minute.
  The waits are spread by job id (half to one and a half ``retry_s``), so that searches that
  failed in one pass do not all come back in one pass.

The controller's shell (:class:`fleetyard.controller.scheduler.SchedulerShell`) and the fleet
simulator (:mod:`fleetyard.sim.fleet`) keep one each and call it the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from fleetyard.policy.snapshot import Plan

__all__ = [
    "DEFAULT_MAX_PREEMPTIONS",
    "DEFAULT_PREEMPT_PROTECT_S",
    "DEFAULT_SEARCH_RETRY_S",
    "HOLD_FREED_S",
    "PreemptionHolds",
    "RunningAttempt",
]

# A job preempted before is not preempted again for this long after it starts again.
DEFAULT_PREEMPT_PROTECT_S = 600.0
# A job preempted this many times runs to its end.
DEFAULT_MAX_PREEMPTIONS = 2
# Boards freed by a preemption stay held for the job that preempted at most this long.
HOLD_FREED_S = 300.0
# A job whose search for victims found none searches again after this long: as long as boards
# freed for a job stay held for it (what a search finds seldom changes sooner, on a busy fleet).
DEFAULT_SEARCH_RETRY_S = HOLD_FREED_S
RETRY_SPREAD = 8  # job ids mod this spread the retries over [0.5, 1.5) x retry_s


@dataclass(frozen=True, slots=True)
class RunningAttempt:
    """A running attempt as the holds see it."""

    attempt_id: int
    job_id: int
    boards: tuple[str, ...]
    started_at: float
    preempted_for: int | None = None  # told to stop, for this job


class PreemptionHolds:
    """Held boards and protected attempts, brought up to date once a pass by :meth:`observe`."""

    def __init__(
        self,
        protect_s: float = DEFAULT_PREEMPT_PROTECT_S,
        hold_s: float = HOLD_FREED_S,
        max_preemptions: int = DEFAULT_MAX_PREEMPTIONS,
        retry_s: float = DEFAULT_SEARCH_RETRY_S,
    ) -> None:
        if protect_s < 0 or hold_s < 0 or retry_s < 0:
            raise ValueError(
                f"protect_s, hold_s and retry_s are durations: >= 0 (got {protect_s}, {hold_s}, {retry_s})"
            )
        if max_preemptions < 1:
            raise ValueError(f"max_preemptions must be >= 1 (got {max_preemptions})")
        self.protect_s = protect_s
        self.hold_s = hold_s
        self.max_preemptions = max_preemptions
        self.retry_s = retry_s
        self._retry: dict[int, float] = {}  # job -> when it may search for victims again
        self._stopping: dict[int, tuple[int, tuple[str, ...]]] = {}  # attempt -> (for job, its boards)
        self._held: dict[str, tuple[int, float]] = {}  # board -> (job, since)
        self._protected: dict[int, float] = {}  # running attempt -> protected until (0: not)

    def observe(
        self,
        now: float,
        running: Sequence[RunningAttempt],
        waiting: Collection[int],
        preempted_before: Callable[[Sequence[int]], Mapping[int, int]],
    ) -> None:
        """Bring the holds to the running attempts and the jobs ``waiting`` in line at ``now``.
        ``preempted_before(job_ids)`` says how many times those of these jobs that were preempted
        before were (absent: never); it is asked once per attempt, about attempts new since the
        last call."""
        live = {r.attempt_id for r in running}
        for attempt_id, (job_id, boards) in list(self._stopping.items()):
            if attempt_id not in live:  # it stopped: its boards are the preemptor's
                del self._stopping[attempt_id]
                for b in boards:
                    self._held[b] = (job_id, now)
        for r in running:
            if r.preempted_for is not None:
                self._stopping[r.attempt_id] = (r.preempted_for, r.boards)
        for b, (job_id, since) in list(self._held.items()):
            if job_id not in waiting or now - since > self.hold_s:
                del self._held[b]
        for job_id, after in list(self._retry.items()):
            if job_id not in waiting or after <= now:
                del self._retry[job_id]
        new = [r for r in running if r.attempt_id not in self._protected]
        if new:
            before = preempted_before(sorted({r.job_id for r in new}))
            for r in new:
                times = before.get(r.job_id, 0)
                self._protected[r.attempt_id] = (
                    math.inf if times >= self.max_preemptions else r.started_at + self.protect_s if times else 0.0
                )
        for attempt_id in set(self._protected) - live:
            del self._protected[attempt_id]

    def keep(self, plan: Plan, now: float) -> None:
        """What a plan made at ``now`` leaves to the next passes: its :attr:`~Plan.kept` boards,
        held for their job from now; its jobs that searched for victims in vain, not searching
        again for about ``retry_s`` (spread by job id)."""
        for b, job_id in plan.kept.items():
            self._held[b] = (job_id, now)
        for job_id in plan.searched_in_vain:
            self._retry[job_id] = now + self.retry_s * (0.5 + (job_id % RETRY_SPREAD) / RETRY_SPREAD)

    def search_after(self) -> dict[int, float]:
        """Job -> when it may search for victims again (:attr:`Snapshot.search_after`)."""
        return dict(self._retry)

    def held_for(self) -> dict[str, int]:
        """Board -> the job it is held for (:attr:`Snapshot.held_for`)."""
        return {b: job_id for b, (job_id, _) in self._held.items()}

    def protected_until(self, attempt_id: int) -> float:
        """Until when the running attempt is not preempted (0: it may be now; inf: never)."""
        return self._protected.get(attempt_id, 0.0)
