"""Public API models: what ``/v1`` answers to people, scripts and the SDK."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

from fleetyard.domain.auth import Role
from fleetyard.domain.spec import BoardId, JobSpec, LabelKey, LabelValue
from fleetyard.protocol.agent import BoardOp, FaultAction, FaultKind

Sha256 = Annotated[str, Field(min_length=64, max_length=64, description="a blob's sha256 (64 lowercase hex)")]


class HostOut(BaseModel):
    id: str
    state: str
    driver: str
    agent_version: str | None
    labels: dict[str, str]
    last_heartbeat_at: float | None
    registered_at: float
    boards: int
    cached: list[str] = Field(
        default_factory=list,
        description="sha256 of blobs in its agent's cache, most recently used last, as its agent reports",
    )


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
    warm: list[str] = Field(
        default_factory=list,
        description="sha256 of the artifacts its worker holds loaded, most recently used last, as its agent reports",
    )
    hardware_revision: str | None = Field(None, description="as its driver reads it off the board")
    onboard_batch: str | None = Field(None, description="the batch it onboards in (site/rack, auto/HOST, approved-…)")


class BoardEventOut(BaseModel):
    id: int
    board_id: str
    at: float
    from_state: str | None
    to_state: str
    reason: str
    actor: str
    job_id: int | None


# ---- the declared inventory, and approving boards into onboarding -----------------------------


class ApproveIn(BaseModel):
    """Let boards waiting in ``discovered`` onboard, as one batch."""

    model_config = {"extra": "forbid"}

    boards: list[BoardId] = Field(min_length=1, max_length=10_000, description="serials of boards in discovered")
    batch: str | None = Field(
        None, min_length=1, max_length=200, description="their onboarding batch; default approved-YYYYmmddTHHMM"
    )
    reason: str = Field(min_length=1, max_length=1000)


class InventoryIn(BaseModel):
    """An inventory file's text (YAML), validated by the server: errors name the field and line."""

    model_config = {"extra": "forbid"}

    text: str = Field(max_length=16 * 1024 * 1024)
    dry_run: bool = Field(False, description="sync only: say what it would do, change nothing")


class InventoryBoardOut(BaseModel):
    serial: str
    site: str
    rack: str
    host: str
    slot: int
    generation: str
    hardware_revision: str | None = None


class InventoryHostOut(BaseModel):
    id: str
    site: str
    rack: str
    boards: int


class MissingBoardOut(InventoryBoardOut):
    why: str = Field(description="no agent has found it, or its board is offline or retired")


class MovedBoardOut(BaseModel):
    serial: str
    from_host: str = Field(description="where the inventory declares it")
    from_slot: int
    to_host: str = Field(description="where its agent found it")
    to_slot: int


class FoundBoardOut(BaseModel):
    serial: str
    host: str
    slot: int
    generation: str
    hardware_revision: str | None = None
    state: str


class MismatchedBoardOut(BaseModel):
    serial: str
    field: str = Field(description="generation or hardware_revision")
    declared: str | None
    found: str | None


class InventoryDiffOut(BaseModel):
    """A declared inventory against the stored one and against what agents found."""

    new: list[InventoryBoardOut] = Field(description="declared, not in the stored inventory yet")
    removed: list[InventoryBoardOut] = Field(description="in the stored inventory, no longer declared")
    changed: list[InventoryBoardOut] = Field(description="stored, declared differently now (as declared)")
    missing: list[MissingBoardOut] = Field(description="declared, but no agent finds it (or it is offline, retired)")
    moved: list[MovedBoardOut] = Field(description="found on another host or slot than declared")
    unexpected: list[FoundBoardOut] = Field(description="found by agents, not declared")
    mismatched: list[MismatchedBoardOut] = Field(description="found with another generation or hardware revision")
    counts: dict[str, int] = Field(description="declared, stored, found (boards agents find now)")


class ApprovedBoardOut(BaseModel):
    serial: str
    batch: str | None
    reason: str


class InventorySyncOut(BaseModel):
    diff: InventoryDiffOut = Field(description="against the inventory stored before")
    approved: list[ApprovedBoardOut] = Field(description="discovered boards it let onboard (would, on a dry run)")
    dry_run: bool
    synced_at: float | None


class InventoryOut(BaseModel):
    """The stored inventory and its settings; ``synced_at`` null: never synced (the open fleet)."""

    synced_at: float | None
    synced_by: str | None
    auto_approve: list[str]
    parallelism: int = Field(description="boards onboarding at once")
    hosts: list[InventoryHostOut]
    boards: list[InventoryBoardOut]


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
    # What ended it: "workload" (its own end), or a stop: host_lost, agent_stopped, board_fault, ...
    cause: str | None = None
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
    pending_reason: str | None = Field(None, description="while queued: why, as the scheduler last saw it")


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
    team: str | None = Field(None, min_length=1, max_length=100)
    host: str | None = Field(None, min_length=1, max_length=200)


class TokenOut(BaseModel):
    name: str
    role: Role
    team: str | None
    host: str | None
    created_at: float
    token: str | None = Field(None, description="the secret, shown once at creation")


class AuditEntryOut(BaseModel):
    """One operator action in the audit log."""

    id: int
    at: float
    actor: str = Field(description="the name of the token that made the call")
    role: str
    action: str = Field(description="what was done, e.g. board.drain, breaker.reset, token.create")
    target: str | None = Field(description="what it was done to: a board id, generation, queue, token name, job id")
    reason: str | None = Field(description="the operator's words, for calls that take a reason")
    detail: dict[str, Any] = Field(description="the rest of the request (never a secret)")


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
    created_at: float | None = None
    acked_at: float | None = Field(None, description="when the board's agent said it applied the order (None: not yet)")


class BoardOpIn(BaseModel):
    op: BoardOp
    reason: str = Field("", max_length=1000, description="why (kept with the op)")
    version: str | None = Field(
        None, max_length=100, description="flash: a registered firmware version of the board's generation"
    )
    timeout_s: float | None = Field(
        None, gt=0, le=86400, description="no result by then: the op failed (default: the op's own)"
    )
    take_over: bool = Field(
        False,
        description="the board (any board of the host, for host_reboot) is under automatic remediation:"
        " close its case as taken over by you (audited) and keep it drained, rather than refuse the op",
    )


class RepairOut(BaseModel):
    """A board's remediation case: open while it goes up the ladder; closed, its repair record."""

    id: int
    board_id: str
    opened_at: float
    cause: str = Field(description="why the board left service")
    step: int = Field(description="the ladder step under way or last tried (0-based; -1: its first check)")
    phase: str = Field(description="operate or check")
    closed_at: float | None = None
    outcome: str | None = Field(
        None, description="healed, quarantined, abandoned or taken_over (by an operator); none while open"
    )
    reason: str | None = None
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="steps (each step and check, how it went); for a quarantined board also its last "
        "telemetry, recent events and the outputs of its failed checks (blob sha256s)",
    )


class BoardOpOut(BaseModel):
    """A remediation step ordered for a board, and what its host's agent reported."""

    id: int
    board_id: str
    op: str
    state: str = Field(description="ordered, delivered, succeeded, failed or timed_out")
    reason: str
    actor: str
    ordered_at: float
    timeout_s: float
    delivered_at: float | None = None
    started_at: float | None = Field(None, description="agent's clock")
    finished_at: float | None = Field(None, description="agent's clock")
    ok: bool | None = None
    message: str | None = None
    version: str | None = Field(None, description="flash: the firmware version written")


class ArtifactIn(BaseModel):
    sha256: Sha256 = Field(description="an uploaded blob (PUT /v1/blobs/{sha256})")
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


class FirmwareIn(BaseModel):
    """A firmware image to register: its bytes were uploaded as a blob (PUT /v1/blobs/{sha256})."""

    generation: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=100, description="a PEP 440 version, e.g. 2.2.0")
    sha256: Sha256 = Field(description="the uploaded image")
    notes: str = Field("", max_length=10_000)
    hardware_revisions: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=100, description="the board revisions it supports; empty: all"
    )


class FirmwareOut(BaseModel):
    generation: str
    version: str
    sha256: str
    size: int
    notes: str
    hardware_revisions: list[str]
    standard: bool = Field(description="the generation's standard: what onboarding flashes")
    uploaded_by: str
    uploaded_at: float


class QueueGenerationOut(BaseModel):
    """One generation of a queue: its quota and what its team holds and waits for."""

    generation: str
    nominal: int | None = Field(description="boards guaranteed; null: unlimited")
    borrowing_limit: int | None = Field(description="the most borrowed beyond nominal; null: no limit")
    in_use: int = Field(description="boards of this generation held by the team's jobs")
    borrowed: int = Field(description="in use beyond nominal")
    headroom: int | None = Field(description="how many more the queue may take now; null: unlimited")
    pending_jobs: int = Field(description="queued jobs that may run on this generation (naming it, or none)")
    pending_boards: int = Field(description="the boards those queued jobs ask for")


class QueueOut(BaseModel):
    name: str = Field(description="the team")
    configured: bool = Field(description="false: a team with jobs but no queue, so unlimited")
    cohort: str | None
    nominal: dict[str, int] | None = Field(description="generation -> boards guaranteed; null: unlimited")
    borrowing_limit: dict[str, int]
    usage: float = Field(description="fair-share usage: decayed board-seconds")
    pending_jobs: int = Field(description="all the team's queued jobs")
    pending_boards: int
    generations: list[QueueGenerationOut]
    updated_at: float | None
    updated_by: str | None


class PriorityClassOut(BaseModel):
    name: str
    value: int
    default: bool
    teams: list[str] | None = Field(None, description="the teams that may submit in it; null: every team")
    max_lost_s: float | None = Field(
        None, description="the most work, in seconds per board it needs, its jobs' preemptions throw away; null: no cap"
    )


# ---- leases: an engineer's reservation of boards (jobs of kind "lease") ------------------------

MAX_LEASE_S = 7 * 24 * 3600.0  # domain.spec.MAX_TIME_LIMIT_S: a lease is a job, it lasts at most that


class LeaseIn(BaseModel):
    """Take a lease: K boards held for an engineer until released or ``ttl_s`` after granted."""

    model_config = {"extra": "forbid"}

    boards: int = Field(1, ge=1, le=4096, description="how many boards, all at once")
    generations: list[Annotated[str, Field(max_length=100)]] = Field(
        default_factory=list, max_length=64, description="any of these; empty means any"
    )
    labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=64, description="board labels to match as a subset"
    )
    board_ids: list[BoardId] = Field(default_factory=list, max_length=4096, description="only these boards")
    ttl_s: float = Field(gt=0, le=MAX_LEASE_S, description="how long it lasts from when its boards are granted")
    note: str | None = Field(None, max_length=1000, description="what the boards are for")
    team: str | None = Field(None, max_length=100, description="defaults to the taker's team")
    priority_class: str | None = Field(None, max_length=100)


class LeaseRenewIn(BaseModel):
    model_config = {"extra": "forbid"}

    ttl_s: float | None = Field(None, gt=0, le=MAX_LEASE_S, description="from now; default: the lease's own TTL")


class LeaseBoardOut(BaseModel):
    rank: int
    board_id: str
    host_id: str
    device: str | None
    state: str = Field(description="the rank's state: pending, delivered, running, exited")
    access: dict[str, Any] | None = Field(
        None, description="how to reach the board (host, device, env, shell, ssh) once its rank runs"
    )


class LeaseOut(BaseModel):
    id: int = Field(description="the lease's job id")
    state: str = Field(description="the job's state: queued, running, or how it ended")
    active: bool = Field(description="queued or running, and not being released")
    ended: str | None = Field(None, description="released, expired or failed, once it ended")
    team: str
    owner: str
    note: str | None
    boards_wanted: int
    ttl_s: float
    submitted_at: float
    started_at: float | None
    finished_at: float | None
    expires_at: float | None = Field(description="when it ends unless renewed; none while it waits for boards")
    pending_reason: str | None
    message: str | None
    boards: list[LeaseBoardOut]


class WhyOut(BaseModel):
    """Why a job is pending: the scheduler's last word and a fresh look at the fleet."""

    job_id: int
    state: str
    summary: str
    details: dict[str, Any] = Field(default_factory=dict)
    reservation: dict[str, Any] | None = None


class IncidentOut(BaseModel):
    board: str
    generation: str
    start: float
    end: float | None = Field(description="null: still down")
    state: str = Field(description="the down state it began with: suspect, offline, quarantined, …")
    cause: str
    repaired: bool


class GenerationStatsOut(BaseModel):
    generation: str
    boards: int
    availability: float | None
    incidents: int


class FleetStatsOut(BaseModel):
    """Uptime accounting from the board event log (:mod:`fleetyard.policy.uptime`)."""

    since: float
    until: float
    boards: int
    availability: float | None = Field(description="in-service time over counted time (planned maintenance excluded)")
    board_days: float = Field(description="counted board time, in days")
    incidents: int
    incidents_per_1000_board_days: float | None
    mttr_s: float | None = Field(description="mean time to repair: incidents that ended back in service")
    mtbi_s: float | None = Field(description="mean in-service time between incidents")
    mttd_s: float | None = Field(description="mean time from an injected fault to its board's next incident")
    faults_detected: int
    faults_undetected: int
    by_cause: dict[str, int]
    by_generation: list[GenerationStatsOut]
    worst_boards: list[tuple[str, float]] = Field(description="the least available boards, (id, availability)")
    recent_incidents: list[IncidentOut]


class BreakerOut(BaseModel):
    """A generation's circuit breaker: tripped, it stops automatic remediation of the generation."""

    generation: str
    tripped: bool
    tripped_at: float | None
    reason: str | None
    reset_at: float | None = None
    reset_by: str | None = None
    reset_reason: str | None = None


class OnboardingBatchOut(BaseModel):
    """A batch of boards onboarding together (``repair``: boards back from repair), as it stands."""

    batch: str
    boards: int = Field(description="onboarding records in the batch")
    steps: dict[str, int] = Field(description="records per step: queued, inspect, flash, burn_in, done, failed")
    done: int = Field(description="boards that passed: in service")
    failed: int = Field(description="boards that failed (quarantined) or left onboarding another way")
    first_created_at: float | None = Field(description="when its first board was queued")
    last_finished_at: float | None = Field(description="when its last finished board finished")


class OnboardingBoardOut(BaseModel):
    """One board of a batch: its latest onboarding record there."""

    board_id: str
    batch: str
    step: str = Field(description="queued, inspect, flash, burn_in, done or failed")
    since: float = Field(description="when it entered the step")
    created_at: float
    finished_at: float | None = None
    outcome: str | None = Field(None, description="available, quarantined or abandoned; none while open")
    op_id: int | None = Field(None, description="its flash op (GET /v1/boards/{id}/ops)")
    check_job_id: int | None = Field(None, description="its burn-in check job")
    evidence: dict[str, Any] = Field(
        default_factory=dict,
        description="log (each step and what it came to), facts (what inspection read), problems, reason",
    )


class RolloutIn(BaseModel):
    """A staged firmware rollout: every board of ``generation`` to ``version``, in waves. The plan's
    fields left out take their defaults (canary 8 boards, shares 5/25/50/100 %, soak 30 min, 8
    control boards, drain by waiting for running jobs)."""

    generation: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=100, description="a registered image of the generation")
    reason: str = Field(min_length=1, max_length=1000)
    canary: int | None = Field(None, description="boards in the first wave")
    shares: list[float] | None = Field(
        None, max_length=100, description="of the generation, cumulative, after the canary; last 1"
    )
    soak_s: float | None = Field(None, description="after each wave, before its gate")
    control: int | None = Field(None, description="boards kept on the old firmware until the last wave")
    drain: str | None = Field(
        None, max_length=20, description="wait: running jobs finish; requeue: re-queued after drain_timeout_s"
    )
    drain_timeout_s: float | None = None
    step_timeout_s: float | None = Field(None, description="a flash or check that takes longer failed")


class RolloutWaveOut(BaseModel):
    """One wave: its boards by step and, once gated, the figures, the gate's table and the verdict."""

    index: int
    boards: int
    steps: dict[str, int] = Field(description="the wave's boards per step")
    started_at: float | None = None
    flashed_at: float | None = Field(None, description="every board of the wave done or failed")
    soak_checks_at: float | None = None
    checks_in: bool = False
    soak: dict[str, list[int]] | None = Field(
        None,
        description="wave and control: [boards with a judged soak check, boards in service]; a check that "
        "could not run is not judged, and the gate waits for judged ones",
    )
    verdict: bool | None = Field(None, description="passed its gate; none until gated")
    figures: dict[str, Any] | None = Field(None, description="wave and control: checks, infra errors, validations, …")
    gate: dict[str, Any] | None = Field(None, description="each measure: the wave's, the control's, the limit")
    reasons: list[str] = Field(default_factory=list, description="why it failed its gate")


class RolloutBoardOut(BaseModel):
    board_id: str
    wave: int
    control: bool = Field(description="kept on the old firmware until the last wave")
    step: str
    step_at: float
    from_version: str = Field(description="what it ran before: what a rollback flashes back")
    firmware: str | None = Field(None, description="what it runs now")
    state: str | None = Field(None, description="its board state now")
    op_id: int | None = None
    check_job_id: int | None = None
    flashed_at: float | None = None
    message: str | None = None


class RolloutOut(BaseModel):
    id: int
    generation: str
    version: str
    image: str
    state: str = Field(description="running, paused, rolling_back, rolled_back, completed or aborted")
    wave: int = Field(description="the wave under way")
    waves: int
    plan: dict[str, Any]
    counts: dict[str, int] = Field(description="boards per step")
    created_by: str
    reason: str
    created_at: float
    updated_at: float
    ended_at: float | None = None
    message: str | None = None


class RolloutDetail(RolloutOut):
    wave_records: list[RolloutWaveOut]
    boards: list[RolloutBoardOut]


class PipelineIn(BaseModel):
    """A pipeline run to start: the spec's YAML text and ``--set`` params."""

    text: str = Field(min_length=1, max_length=1_000_000, description="the pipeline spec (YAML)")
    params: dict[Annotated[str, Field(max_length=200)], Any] = Field(
        default_factory=dict, max_length=1000, description="overrides of the spec's params"
    )


class PipelineStageOut(BaseModel):
    name: str  # e.g. "validate[generation=sim-g1]"
    stage: str
    matrix: dict[str, Any]
    state: str  # waiting, running, succeeded, failed, skipped
    attempts: int
    job_id: int | None
    metrics: dict[str, Any]
    outputs: dict[str, Any]
    gated: bool  # skipped because its condition was false
    message: str | None
    updated_at: float


class PipelineRunOut(BaseModel):
    id: int
    name: str
    state: str  # running, succeeded, failed, gated, timed_out, canceled
    owner: str
    team: str
    created_at: float
    finished_at: float | None
    message: str | None
    stages: list[PipelineStageOut] = Field(default_factory=list)
    needs: dict[str, list[str]] = Field(default_factory=dict, description="stage -> the stages it needs (the DAG)")
