"""Public API models: what ``/v1`` answers to people, scripts and the SDK."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from fleetyard.domain.auth import Role
from fleetyard.domain.spec import JobSpec
from fleetyard.protocol.agent import FaultAction, FaultKind


class HostOut(BaseModel):
    id: str
    state: str
    driver: str
    agent_version: str | None
    labels: dict[str, str]
    last_heartbeat_at: float | None
    registered_at: float
    boards: int


class BoardOut(BaseModel):
    id: str
    host_id: str
    slot: int
    generation: str
    firmware: str
    device: str
    state: str
    state_reason: str | None
    drain_reason: str | None
    labels: dict[str, str]
    attempt_id: int | None
    job_id: int | None
    telemetry: dict[str, float]
    telemetry_at: float | None
    probe_ok: bool | None
    probe_reason: str | None


class BoardEventOut(BaseModel):
    id: int
    board_id: str
    at: float
    from_state: str | None
    to_state: str
    reason: str
    actor: str
    job_id: int | None


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


class FaultIn(BaseModel):
    kind: FaultKind | None = None
    action: FaultAction = FaultAction.INJECT


class RankOut(BaseModel):
    assignment_id: int
    rank: int
    board_id: str
    host_id: str
    state: str
    outcome: str | None
    exit_code: int | None
    message: str | None
    created_at: float  # the controller bound the rank to its board
    delivered_at: float | None  # the board's agent took it (its assignments poll)
    started_at: float | None
    finished_at: float | None
    result: dict[str, Any]
    outputs: dict[str, str]


class AttemptOut(BaseModel):
    id: int
    number: int
    state: str
    outcome: str | None
    message: str | None
    created_at: float
    finished_at: float | None
    ranks: list[RankOut]


class JobOut(BaseModel):
    id: int
    name: str | None
    kind: str
    state: str
    team: str
    owner: str
    priority: int
    spec: JobSpec
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    outcome: str | None = Field(description="class of the last attempt, or why it never ran")
    message: str | None
    attempts: int
    infra_retries: int


class JobDetail(JobOut):
    attempt_list: list[AttemptOut]


class JobBatchIn(BaseModel):
    jobs: list[JobSpec] = Field(min_length=1, max_length=1000)


class JobBatchOut(BaseModel):
    ids: list[int]


class LogChunk(BaseModel):
    attempt_id: int
    rank: int
    seq: int
    at: float
    data: str


class LogsOut(BaseModel):
    job_id: int
    chunks: list[LogChunk]
    cursor: int = Field(description="pass as ?after= to get only newer chunks")
    finished: bool


class BlobOut(BaseModel):
    sha256: str
    size: int
    created_at: float


class TokenIn(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    team: str | None = None
    host: str | None = None


class TokenOut(BaseModel):
    name: str
    role: Role
    team: str | None
    host: str | None
    created_at: float
    token: str | None = Field(None, description="the secret, shown once at creation")


class ResultsOut(BaseModel):
    job_id: int
    state: str
    outcome: str | None
    attempt_id: int | None
    ranks: list[RankOut]


class FaultOrderOut(BaseModel):
    id: int
    board_id: str
    kind: str | None
    action: str


class ArtifactIn(BaseModel):
    sha256: str = Field(description="an uploaded blob (PUT /v1/blobs/{sha256})")
    name: str | None = Field(None, min_length=1, max_length=200, description="defaults to the sha256's prefix")


class ArtifactOut(BaseModel):
    sha256: str
    name: str
    format: str
    runtime: str
    size: int
    info: dict[str, Any] = Field(description="inputs, outputs, functions, targets (fleetyard.runtimes.ArtifactInfo)")
    created_at: float
    created_by: str
