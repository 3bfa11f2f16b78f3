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


class Cause(StrEnum):
    """Why a rank ended. The outcome says what the end means for the job; the cause says what
    ended it, so that a rank that could not run (its host lost, its agent stopped) is never read
    as a verdict on its board (:func:`fleetyard.policy.outcomes.check_verdict`)."""

    WORKLOAD = "workload"  # the rank's own end: its workload's verdict, or its job's own error
    TIMEOUT = "timeout"  # over its time limit
    CANCELED = "canceled"  # its job was canceled
    PREEMPTED = "preempted"  # taken back for other work or for maintenance
    BOARD_FAULT = "board_fault"  # the board failed under it: off the bus, its worker crashed, a fault seen
    HOST_LOST = "host_lost"  # its host stopped answering: the controller ended it
    AGENT_STOPPED = "agent_stopped"  # its agent shut down or left the fleet
    AGENT_ERROR = "agent_error"  # the agent could not run it (blobs, its rank process, a plugin's bug)
    BOARD_GONE = "board_gone"  # its board is not on the host, or an op took it from under the rank


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
