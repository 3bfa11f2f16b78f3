"""What the scheduler sees and decides (pure data): a :class:`Snapshot` in, a :class:`Plan` out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fleetyard.policy.placement import BoardView, Pool, Shape
from fleetyard.policy.queues import QueueSpec

if TYPE_CHECKING:
    from fleetyard.policy.line import Line

__all__ = ["Binding", "PendingJob", "Plan", "Preemption", "Reservation", "RunningJob", "Snapshot"]


@dataclass(frozen=True, slots=True)
class PendingJob:
    id: int
    queue: str
    boards: int
    shape: Shape
    priority: int = 0  # the priority class's value
    rank: int = 0  # the job's own priority within its class
    submitted_at: float = 0.0
    time_limit_s: float = 3600.0
    artifact: str | None = None  # for warm affinity
    max_lost_s: float | None = None  # its class's: the most work per board its preemptions may throw away


@dataclass(frozen=True, slots=True)
class RunningJob:
    id: int
    queue: str
    boards: tuple[str, ...]
    priority: int = 0
    rank: int = 0
    started_at: float = 0.0
    expected_end: float = float("inf")
    preempted_for: int | None = None  # already told to stop, for this job
    preemptible: bool = True
    # Not preempted before this time: a job preempted before is let run a while after it starts
    # again, so that no job is thrown back and forth (a preemption storm).
    protected_until: float = 0.0


@dataclass(frozen=True)
class Snapshot:
    """``boards`` and ``pending`` may be a :class:`Pool` and a :class:`~fleetyard.policy.line.Line`
    that the caller keeps from pass to pass (the controller does), so that a pass pays for what
    changed, not for the whole fleet and queue: the pass resets the pool to ``free`` first and
    leaves it as it took boards; the line it only reads."""

    now: float
    boards: Sequence[BoardView] | Pool  # every board that could run work someday
    free: frozenset[str]  # those available now
    pending: Sequence[PendingJob] | Line
    running: Sequence[RunningJob] = ()
    queues: Mapping[str, QueueSpec] = field(default_factory=dict)
    usage: Mapping[str, float] = field(default_factory=dict)  # decayed board-seconds per queue
    # How many blocked jobs get a backfill reservation, per generation: a blocked job of one
    # generation never takes the reservation a gang of another needs.
    reservations: int = 1
    # Boards its victims freed, kept for the job that preempted them (board -> job id) while it
    # waits: no other job takes them, in this pass or the next, until it binds or gives them up.
    held_for: Mapping[str, int] = field(default_factory=dict)
    # Jobs whose last search for victims found none (job id -> when they may search again): until
    # then they wait for boards to free, as a job not allowed to preempt does.
    search_after: Mapping[int, float] = field(default_factory=dict)
    # Explain (and preempt and reserve for) only the first `window` jobs left waiting; past them,
    # only place jobs on free boards. None: every job. The rest keep the reason they had.
    window: int | None = None


@dataclass(frozen=True)
class Binding:
    job_id: int
    board_ids: tuple[str, ...]  # index = rank


@dataclass(frozen=True)
class Preemption:
    victim: int  # a running job
    for_job: int
    reason: str


@dataclass(frozen=True)
class Reservation:
    job_id: int
    board_ids: tuple[str, ...]
    expected_start: float


@dataclass
class Plan:
    bindings: list[Binding] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    reservations: list[Reservation] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)  # every pending job not bound
    # Free boards a job that preempted will run on besides its victims' (board -> job): keep them
    # for it (Snapshot.held_for) until its victims stop, or the next pass gives them away.
    kept: dict[str, int] = field(default_factory=dict)
    # Jobs that searched for running jobs to preempt and found none (Snapshot.search_after).
    searched_in_vain: list[int] = field(default_factory=list)
