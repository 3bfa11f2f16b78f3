"""What an attempt's outcome means for its job, what a rank's end means for its board, and why a
rank ended (:class:`Cause`): by its workload's own verdict, or stopped by something else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleetyard.domain.board import BoardState
from fleetyard.domain.job import Cause, JobState, Outcome


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
    outcome: Outcome,
    *,
    board_ok: bool,
    drain_requested: bool,
    probe_reason: str | None = None,
    cause: Cause | None = None,
) -> tuple[BoardState, str]:
    """Where an allocated board goes when its rank ends, and why: an infrastructure error that
    says nothing of the board (the agent's own, its board taken by an op) leaves it in service
    when its probe passes."""
    if outcome is Outcome.INFRA_ERROR and (cause is None or judges_board(cause)):
        return BoardState.SUSPECT, "infrastructure error during a job"
    if not board_ok:
        return BoardState.SUSPECT, "failed its probe after a job" + (f": {probe_reason}" if probe_reason else "")
    if drain_requested:
        return BoardState.DRAINED, "drain requested while allocated"
    return BoardState.AVAILABLE, "released"


def rank_end_reason(why: str, job_id: int, outcome: Outcome, message: str | None = None) -> str:
    """The reason a board's history gives for where a rank's end took it (``why``:
    :func:`board_after_rank`'s)."""
    return f"{why} (job {job_id}, {outcome})" + (f": {message}" if message else "")


# A rank told to stop: why, and what happened (for its message).
Stop = tuple[Cause, str]


def judges_board(cause: Cause) -> bool:
    """Whether a rank that ended for ``cause`` says anything about its board: its workload's
    verdict, a hang, or the board failing under it; not a rank that never got to run to its end."""
    return cause in (Cause.WORKLOAD, Cause.TIMEOUT, Cause.BOARD_FAULT)


def stopped(cause: Cause, detail: str, *, time_limit_s: float) -> tuple[Outcome, str]:
    """The outcome and message of a rank stopped for ``cause`` (``detail``: what happened)."""
    if cause is Cause.TIMEOUT:
        return Outcome.TIMEOUT, f"over its time limit of {time_limit_s:g} s"
    if cause is Cause.CANCELED:
        return Outcome.CANCELED, detail or "canceled"
    if cause in (Cause.PREEMPTED, Cause.AGENT_STOPPED):
        # Not the board's fault, nor the job's: it goes back to the queue like a preempted one,
        # and the board stays in service.
        return Outcome.PREEMPTED, detail or "the agent stopped"
    return Outcome.INFRA_ERROR, detail or str(cause)


# Kinds whose mismatch may be the board's: they compare what the board computed with a reference.
COMPARING_KINDS = frozenset({"validate", "eval"})


def board_in_question(kind: str, outcome: Outcome, result: Mapping[str, Any]) -> bool:
    """Whether a rank's end asks the board's own L1 check before it is the user's error: a
    validation or evaluation that found the outputs wrong (``passed`` false). A board that fails
    the check made the mismatch (:func:`mismatch_blamed`), one that passes leaves it the job's."""
    return kind in COMPARING_KINDS and outcome is Outcome.USER_ERROR and result.get("passed") is False


def mismatch_blamed(message: str | None, why: str) -> tuple[Outcome, Cause, str]:
    """A mismatch that is the board's (``why``: the board then failed its L1 check, or its peers'
    outputs contradict it): an infrastructure error of the board, the job run again elsewhere."""
    said = f"{message}; " if message else ""
    return Outcome.INFRA_ERROR, Cause.BOARD_FAULT, f"{said}{why}: the mismatch is the board's, the job runs elsewhere"


# A check that could not run is run again, up to this many tries that could not run in all; then
# whatever keeps it from running (the board's host, its worker) is the board's trouble, and the
# check counts as failed. Without a bound a check that cannot start would be retried every pass.
CHECK_TRIES = 3


def run_check_again(tries_lost: int) -> bool:
    """Whether a check that could not run (``tries_lost`` times so far, this one included) runs
    again, or counts as failed."""
    return tries_lost < CHECK_TRIES


def check_verdict(outcome: Outcome | None, cause: Cause | None) -> bool | None:
    """What a health check's rank says of its board: passed, failed, or None when the check
    could not run (its host lost, its agent stopped, canceled): run it again, count nothing.
    A rank from before causes were recorded is judged by its outcome alone."""
    if outcome is Outcome.SUCCESS:
        return True
    if cause is None:
        return False if outcome in (Outcome.INFRA_ERROR, Outcome.TIMEOUT) else None
    return False if judges_board(cause) else None
