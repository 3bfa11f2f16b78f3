"""The agent protocol: what a host agent and the server say to each other.

    POST /v1/agent/register     RegisterRequest   -> RegisterResponse
    POST /v1/agent/heartbeat    HeartbeatRequest  -> HeartbeatResponse
    GET  /v1/agent/assignments  ?session=S&wait=SECONDS -> AssignmentBatch   (long poll)
    POST /v1/agent/events       EventBatch        -> EventAck
    POST /v1/agent/leave        LeaveRequest      -> 204   (a clean stop)

Every write is idempotent: an event is keyed by (assignment_id, seq), so an agent that lost the
answer sends the same batch again and nothing changes twice. ``session`` names one run of an
agent process; a new session for a host ends the old session's assignments as infra errors.

Orders ride on the heartbeat's answer: fault orders (simulated boards), acked by id in the next
heartbeat; and board ops (resets, reflash, host reboot: remediation), each carried out once per
agent process and its :class:`OpResult` sent in every heartbeat until an answer lists its id in
``op_acks``, so a result is stored exactly once whatever is lost on the way.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator

from fleetyard.domain.job import Cause, Outcome

# How many warm artifacts a board reports (and the server keeps), most recently used last.
WARM_MAX = 8
# How many of the blobs in its cache a host reports (and the server keeps), most recently used last.
CACHED_MAX = 64


# What an agent sends is bounded like any other request: names, ids, lists and maps.
Name = Annotated[str, Field(min_length=1, max_length=200)]
Id = Annotated[int, Field(ge=0, le=2**63 - 1)]
LabelKey = Annotated[str, Field(max_length=100)]
Labels = Annotated[dict[LabelKey, Annotated[str, Field(max_length=200)]], Field(max_length=64)]
MESSAGE_MAX = 4000  # a rank's or an op's message (the agent cuts a longer one to this)


class BoardInfo(BaseModel):
    serial: Name
    generation: Name
    slot: int = Field(ge=0, le=100_000)
    firmware: Name
    device: str = Field(max_length=200, description="how the worker addresses it, e.g. 'sim:3', 'cpu:0-3', 'cuda:0'")
    labels: Labels = Field(default_factory=dict)
    hardware_revision: str | None = Field(None, max_length=100, description="as the driver reads it off the board")


class RegisterRequest(BaseModel):
    host: Name
    session: Name
    driver: Name
    agent_version: Name
    labels: Labels = Field(default_factory=dict)
    boards: list[BoardInfo] = Field(max_length=10_000)


class RegisterResponse(BaseModel):
    host: str
    heartbeat_interval_s: float


class BoardReport(BaseModel):
    id: Name
    ok: bool = True
    reason: str | None = Field(None, max_length=1000)
    telemetry: dict[Annotated[str, Field(max_length=100)], float] = Field(default_factory=dict, max_length=256)
    # Absent from older agents' reports: an empty list, which is "nothing known to be warm".
    warm: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=1000,
        description="sha256 of the artifacts the board's worker holds loaded, most recently used last"
        f" (at most {WARM_MAX})",
    )


class LeaveRequest(BaseModel):
    """An agent stopping on purpose: its host goes offline now, not after the heartbeat timeout."""

    session: Name


class BoardOp(StrEnum):
    """An operation the host's agent carries out on a board: the remediation ladder's steps
    (:class:`~fleetyard.domain.health_config.RemedyOp`, same values) and ``flash``."""

    SOFT_RESET = "soft_reset"
    HARD_RESET = "hard_reset"
    REFLASH = "reflash"  # write the firmware the board already runs again
    HOST_REBOOT = "host_reboot"  # every board of the host: workers stopped, boards hard-reset
    FLASH = "flash"  # write a registered firmware image (``image``, ``version``)


# How long an op may take, from its order to its result, unless the order says otherwise:
# after that the controller treats it as failed (and the server no longer delivers it).
OP_TIMEOUT_S: dict[BoardOp, float] = {
    BoardOp.SOFT_RESET: 120.0,
    BoardOp.HARD_RESET: 300.0,
    BoardOp.REFLASH: 600.0,
    BoardOp.HOST_REBOOT: 900.0,
    BoardOp.FLASH: 900.0,
}


class OpOrder(BaseModel):
    id: int
    board_id: str
    op: BoardOp
    timeout_s: float
    image: str | None = Field(None, description="flash: the image's sha256 (a blob the agent fetches)")
    version: str | None = Field(None, description="flash: the image's version")


class OpResult(BaseModel):
    id: Id = Field(description="the OpOrder's id")
    ok: bool
    message: str | None = Field(None, max_length=MESSAGE_MAX, description=f"cut to {MESSAGE_MAX} characters")
    started_at: float = Field(description="agent's wall clock, seconds since the epoch")
    finished_at: float = Field(description="agent's wall clock, seconds since the epoch")

    @field_validator("message", mode="before")
    @classmethod
    def _cut(cls, v: object) -> object:
        return _cut(v)


class HeartbeatRequest(BaseModel):
    session: Name
    boards: list[BoardReport] = Field(default_factory=list, max_length=10_000)
    # Absent from older agents' reports: an empty list, which is "nothing known to be cached".
    cached: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list,
        max_length=10_000,
        description="sha256 of the blobs in the host's cache, most recently used last"
        f" (at most {CACHED_MAX}): a job whose artifact is there starts without a download",
    )
    running: list[Id] = Field(default_factory=list, max_length=100_000, description="assignment ids live on this agent")
    fault_acks: list[Id] = Field(default_factory=list, max_length=10_000, description="fault orders applied")
    # Absent from older agents' reports: an empty list, which is "no op finished".
    op_results: list[OpResult] = Field(
        default_factory=list,
        max_length=10_000,
        description="board ops finished here, sent again until the answer acks them",
    )


class FaultKind(StrEnum):
    HANG = "hang"
    CRASH = "crash"
    ECC_STORM = "ecc_storm"
    SILENT_CORRUPTION = "silent_corruption"
    BUS_DROP = "bus_drop"
    BAD_FLASH = "bad_flash"  # flashes fail and leave the firmware corrupt
    BRICK = "brick"  # no firmware bank boots: only a repair helps


class FaultAction(StrEnum):
    INJECT = "inject"
    CLEAR = "clear"


class FaultOrder(BaseModel):
    id: int
    board_id: str
    kind: FaultKind | None = Field(None, description="None with action=clear clears every fault")
    action: FaultAction = FaultAction.INJECT


class HeartbeatResponse(BaseModel):
    cancel: list[int] = Field(default_factory=list, description="assignment ids to kill now")
    faults: list[FaultOrder] = Field(default_factory=list, description="fault orders not yet acked")
    ops: list[OpOrder] = Field(default_factory=list, description="board ops ordered and not yet finished")
    op_acks: list[int] = Field(
        default_factory=list, description="ids of the request's op_results now stored: stop sending them"
    )


class Assignment(BaseModel):
    id: int
    attempt_id: int
    job_id: int
    rank: int
    world_size: int
    board_id: str
    kind: str
    params: dict[str, Any]
    time_limit_s: float
    env: dict[str, str] = Field(default_factory=dict)
    # The job's team: a board's in-process ranks share a runtime process only within one team.
    team: str | None = Field(None, max_length=100)


class AssignmentBatch(BaseModel):
    assignments: list[Assignment]


class EventType(StrEnum):
    STARTED = "started"
    LOG = "log"
    FINISHED = "finished"


class Event(BaseModel):
    assignment_id: Id
    seq: int = Field(ge=0, le=2**63 - 1, description="0 for started, then 1, 2, … per assignment; finished last")
    type: EventType
    at: float = Field(allow_inf_nan=False, description="agent's wall clock, seconds since the epoch")
    data: str | None = Field(None, max_length=1_000_000, description="log text (type=log)")
    exit_code: int | None = Field(None, ge=-(2**31), le=2**31)
    outcome: Outcome | None = Field(None, description="type=finished: how this rank ended")
    cause: Cause | None = Field(None, description="type=finished: what ended it (None from an agent before causes)")
    message: str | None = Field(None, max_length=MESSAGE_MAX, description=f"cut to {MESSAGE_MAX} characters")
    board_ok: bool = Field(True, description="type=finished: the board passed its probe afterwards")
    probe_reason: str | None = Field(
        None, max_length=500, description="type=finished, board_ok false: what the probe found"
    )
    result: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[Annotated[str, Field(max_length=1000)], Annotated[str, Field(max_length=64)]] = Field(
        default_factory=dict, max_length=10_000, description="output name -> blob sha256"
    )

    @field_validator("message", mode="before")
    @classmethod
    def _cut(cls, v: object) -> object:
        return _cut(v)


def _cut(v: object) -> object:
    # Cut, not refused: a finished event (or an op's result) refused for its message would be lost.
    return v[: MESSAGE_MAX - 1] + "…" if isinstance(v, str) and len(v) > MESSAGE_MAX else v


class EventBatch(BaseModel):
    session: Name
    events: list[Event] = Field(max_length=10_000)


class EventAck(BaseModel):
    applied: int
    cancel: list[int] = Field(default_factory=list)
