"""Job, attempt and assignment states, and the outcome classes that decide what happens next.

A job runs as one or more *attempts*; an attempt holds K boards and runs one *assignment* (rank)
on each. Every attempt ends in exactly one :class:`Outcome`.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED)


class AttemptState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"


class AssignmentState(StrEnum):
    PENDING = "pending"  # bound to a board, not yet handed to its agent
    DELIVERED = "delivered"  # handed to the agent, not yet started
    RUNNING = "running"
    EXITED = "exited"

    @property
    def live(self) -> bool:
        return self is not AssignmentState.EXITED


class Outcome(StrEnum):
    SUCCESS = "success"
    USER_ERROR = "user_error"
    INFRA_ERROR = "infra_error"
    TIMEOUT = "timeout"
    PREEMPTED = "preempted"
    CANCELED = "canceled"
    CONFIG_ERROR = "config_error"


# When ranks of one attempt end differently, the attempt takes the most telling class:
# an infrastructure fault explains a user-visible failure, not the other way round.
_PRECEDENCE = [
    Outcome.INFRA_ERROR,
    Outcome.TIMEOUT,
    Outcome.USER_ERROR,
    Outcome.CONFIG_ERROR,
    Outcome.PREEMPTED,
    Outcome.CANCELED,
    Outcome.SUCCESS,
]


def attempt_outcome(rank_outcomes: list[Outcome]) -> Outcome:
    """The class of an attempt from the classes of its ranks (all must have ended)."""
    if not rank_outcomes:
        raise ValueError("an attempt has at least one rank")
    return min(rank_outcomes, key=_PRECEDENCE.index)
