"""What an attempt's outcome means for its job, and what a rank's end means for its board."""

from __future__ import annotations

from dataclasses import dataclass

from fleetyard.domain.board import BoardState
from fleetyard.domain.job import JobState, Outcome


@dataclass(frozen=True)
class JobNext:
    state: JobState  # QUEUED means: run again
    infra_retry: bool = False
    message: str | None = None


def job_after_attempt(outcome: Outcome, *, infra_retries: int, max_infra_retries: int) -> JobNext:
    """DESIGN.md's outcome table. Infra errors retry under their own cap and never count against the user."""
    if outcome is Outcome.SUCCESS:
        return JobNext(JobState.SUCCEEDED)
    if outcome is Outcome.INFRA_ERROR:
        if infra_retries < max_infra_retries:
            return JobNext(JobState.QUEUED, infra_retry=True, message="re-queued after an infrastructure error")
        return JobNext(
            JobState.FAILED,
            message=f"infrastructure errors on {infra_retries + 1} attempts (retry cap reached)",
        )
    if outcome is Outcome.PREEMPTED:
        return JobNext(JobState.QUEUED, message="re-queued after preemption")
    if outcome is Outcome.CANCELED:
        return JobNext(JobState.CANCELED)
    return JobNext(JobState.FAILED)  # user_error, timeout, config_error


def board_after_rank(
    outcome: Outcome, *, board_ok: bool, drain_requested: bool, probe_reason: str | None = None
) -> tuple[BoardState, str]:
    """Where an allocated board goes when its rank ends, and why."""
    if outcome is Outcome.INFRA_ERROR:
        return BoardState.SUSPECT, "infrastructure error during a job"
    if not board_ok:
        return BoardState.SUSPECT, "failed its probe after a job" + (f": {probe_reason}" if probe_reason else "")
    if drain_requested:
        return BoardState.DRAINED, "drain requested while allocated"
    return BoardState.AVAILABLE, "released"
