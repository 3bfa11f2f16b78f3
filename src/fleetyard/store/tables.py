"""The tables. Times are seconds since the epoch (float), as the policy sees them."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = sa.JSON().with_variant(JSONB(), "postgresql")
Time: sa.Double[float] = sa.Double()

hosts = sa.Table(
    "hosts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("driver", sa.String(200), nullable=False),
    sa.Column("agent_version", sa.String(50)),
    sa.Column("labels", Json, nullable=False),
    sa.Column("session", sa.String(64)),
    sa.Column("registered_at", Time, nullable=False),
    sa.Column("last_heartbeat_at", Time),
    # When it was last declared lost or left: a heartbeat received before then does not bring it back.
    sa.Column("offline_since", Time),
    # Blobs (sha256) in its agent's cache lately, as the agent reports: warm affinity.
    sa.Column("cached", Json, nullable=False, server_default="[]"),
)

boards = sa.Table(
    "boards",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),  # the serial: a board's identity
    sa.Column("host_id", sa.String(200), sa.ForeignKey("hosts.id"), nullable=False, index=True),
    sa.Column("slot", sa.Integer, nullable=False),
    sa.Column("generation", sa.String(100), nullable=False),
    sa.Column("firmware", sa.String(100), nullable=False),
    sa.Column("device", sa.String(100), nullable=False),
    sa.Column("labels", Json, nullable=False),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("state_reason", sa.Text),
    sa.Column("state_changed_at", Time, nullable=False),
    sa.Column("drain_reason", sa.Text),
    # Invariant: state == 'allocated' => attempt_id IS NOT NULL; a board out of service
    # (suspect, remediating) holds one only for its health check (see store.healing).
    sa.Column("attempt_id", sa.Integer),
    sa.Column("job_id", sa.Integer),
    sa.Column("telemetry", Json, nullable=False),
    sa.Column("telemetry_at", Time),
    sa.Column("probe_ok", sa.Boolean),
    sa.Column("probe_reason", sa.Text),
    # Artifacts (sha256) this board's worker has loaded lately, as its agent reports: warm affinity.
    sa.Column("warm", Json, nullable=False, server_default="[]"),
    # L1 bookkeeping (policy.health.l1_due): the last passing L1 check and user jobs since; a
    # board whose check is due takes no new user job (check_due: why) until its check
    # (check_job_id) ran.
    sa.Column("l1_at", Time),
    sa.Column("jobs_since_l1", sa.Integer, nullable=False, server_default="0"),
    sa.Column("check_due", sa.Text),
    sa.Column("check_job_id", sa.Integer),
    # What the agent read off the board (the driver's identity); firmware images name the
    # revisions they support.
    sa.Column("hardware_revision", sa.String(100)),
    # Boards approved together onboard as a batch (progress per batch); NULL once it serves.
    sa.Column("onboard_batch", sa.String(200)),
)

board_events = sa.Table(
    "board_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("board_id", sa.String(200), nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("from_state", sa.String(20)),
    sa.Column("to_state", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(20), nullable=False),
    sa.Column("job_id", sa.Integer),
    sa.Column("attempt_id", sa.Integer),
    sa.Index("ix_board_events_board_id_id", "board_id", "id"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200)),
    sa.Column("kind", sa.String(50), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("team", sa.String(100), nullable=False, index=True),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("spec", Json, nullable=False),
    sa.Column("submitted_at", Time, nullable=False),
    sa.Column("started_at", Time),
    sa.Column("finished_at", Time),
    sa.Column("outcome", sa.String(20)),
    sa.Column("message", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("infra_retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    # Why a queued job waits, as the scheduler last saw it (with the numbers).
    sa.Column("pending_reason", sa.Text),
    # A lease (kind "lease") ends then unless renewed.
    # Not schedulable before this (a lost host's work waits a grace period: store.hosts.lose_host).
    sa.Column("not_before", Time),
    sa.Column("lease_expires_at", Time),
    sa.Index("ix_jobs_state_priority_id", "state", "priority", "id"),
)

attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id"), nullable=False, index=True),
    sa.Column("number", sa.Integer, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("outcome", sa.String(20)),
    sa.Column("message", sa.Text),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("finished_at", Time),
    # Set when the scheduler preempts this attempt: the job its boards go to.
    sa.Column("preempted_for", sa.Integer),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("attempt_id", sa.Integer, sa.ForeignKey("attempts.id"), nullable=False, index=True),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("board_id", sa.String(200), nullable=False),
    sa.Column("host_id", sa.String(200), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("outcome", sa.String(20)),
    # What ended it (domain.job.Cause): its workload, or a stop (host lost, agent stopped, ...).
    sa.Column("cause", sa.String(20)),
    sa.Column("exit_code", sa.Integer),
    sa.Column("message", sa.Text),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("delivered_at", Time),
    sa.Column("started_at", Time),
    sa.Column("finished_at", Time),
    sa.Column("result", Json, nullable=False),
    sa.Column("outputs", Json, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_assignments_host_id_state", "host_id", "state"),
    sa.Index("ix_assignments_state", "state"),
    sa.Index("ix_assignments_finished_at", "finished_at"),  # the controller reads the ranks that ended lately
)

logs = sa.Table(
    "logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("assignment_id", sa.Integer, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("attempt_id", sa.Integer, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("at", Time, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.UniqueConstraint("assignment_id", "seq", name="uq_logs_assignment_id_seq"),
    sa.Index("ix_logs_job_id_id", "job_id", "id"),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

# Which teams read a blob (content-addressed, so one blob may be several teams'): the team that
# uploaded it, the team whose job made it (an output), "*" for every team (an output of a job
# shared with the fleet; blobs that predate this table). Staff and agents read every blob, and
# every user reads a registered artifact's.
blob_readers = sa.Table(
    "blob_readers",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("team", sa.String(100), primary_key=True),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("team", sa.String(100)),
    sa.Column("host", sa.String(200)),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("revoked_at", Time),
)

# The audit log: every operator action (a staff call that changes state, another's job
# cancelled), written in the action's own transaction. ``actor`` is the token's name;
# ``detail`` the request body without its reason (a column of its own) and never a secret.
audit = sa.Table(
    "audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", Time, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("role", sa.String(20), nullable=False),
    sa.Column("action", sa.String(50), nullable=False),
    sa.Column("target", sa.String(200)),
    sa.Column("reason", sa.Text),
    sa.Column("detail", Json, nullable=False),
    sa.Index("ix_audit_at", "at"),
    sa.Index("ix_audit_target_at", "target", "at"),
)

# Artifacts: blobs a runtime can run, inspected once when pushed (format, signature, targets).
artifacts = sa.Table(
    "artifacts",
    metadata,
    sa.Column("sha256", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, index=True),
    sa.Column("format", sa.String(20), nullable=False),
    sa.Column("runtime", sa.String(50), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("info", Json, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
)

# Each server process marks itself alive here while it absorbs heartbeats: the controller judges
# hosts by their silence only while some server was listening.
servers = sa.Table(
    "servers",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("started_at", Time, nullable=False),
    sa.Column("seen_at", Time, nullable=False),
)

fault_orders = sa.Table(
    "fault_orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("board_id", sa.String(200), nullable=False, index=True),
    sa.Column("kind", sa.String(50)),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("acked_at", Time),
)

queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),  # a team's name
    sa.Column("cohort", sa.String(100)),
    sa.Column("nominal", Json),  # generation -> boards; NULL: unlimited
    sa.Column("borrowing_limit", Json, nullable=False),  # generation -> boards
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=False),
)

priority_classes = sa.Table(
    "priority_classes",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.Integer, nullable=False),
    sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("teams", Json, nullable=True),  # who may submit in it; null: every team
    sa.Column("max_lost_s", sa.Float, nullable=True),  # per board its preemptions may throw away; null: no cap
)

# Decayed board-seconds per queue (fair share), advanced by the controller.
queue_usage = sa.Table(
    "queue_usage",
    metadata,
    sa.Column("queue", sa.String(100), primary_key=True),
    sa.Column("usage", sa.Double, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
)

# The head-of-line job's reservation (backfill): boards held for it and when it should start.
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("job_id", sa.Integer, primary_key=True),
    sa.Column("boards", Json, nullable=False),
    sa.Column("expected_start", Time, nullable=False),
    sa.Column("created_at", Time, nullable=False),
)

# A generation's circuit breaker (policy/brakes.py): tripped, it stops automatic remediation of
# that generation until an operator resets it. One row per trip; the open one has no reset_at.
breakers = sa.Table(
    "breakers",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("generation", sa.String(100), nullable=False, index=True),
    sa.Column("tripped_at", Time, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("reset_at", Time),
    sa.Column("reset_by", sa.String(100)),
    sa.Column("reset_reason", sa.Text),
)

# Remediation steps ordered for a board (soft reset, reflash, host reboot…), carried out by its
# host's agent, which reports the result in a heartbeat. Times: ordered_at, delivered_at and
# reported_at are the server's clock; started_at and finished_at the agent's. No result
# (finished_at NULL) by ordered_at + timeout_s: the op failed, and is no longer delivered.
board_ops = sa.Table(
    "board_ops",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("board_id", sa.String(200), sa.ForeignKey("boards.id"), nullable=False),
    sa.Column("op", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("actor", sa.String(100), nullable=False),
    sa.Column("ordered_at", Time, nullable=False),
    sa.Column("timeout_s", Time, nullable=False),
    sa.Column("delivered_at", Time),
    sa.Column("started_at", Time),
    sa.Column("finished_at", Time),
    sa.Column("reported_at", Time),
    sa.Column("ok", sa.Boolean),
    sa.Column("message", sa.Text),
    sa.Column("image", sa.String(64)),  # flash: the firmware image (a blob's sha256)
    sa.Column("version", sa.String(100)),  # flash: its version
    sa.Index("ix_board_ops_board_id_id", "board_id", "id"),
    sa.Index("ix_board_ops_finished_at", "finished_at"),
)

# A failing board's case on the remediation ladder (policy.remediation.Case), open until it is
# healed or quarantined (closed_at, outcome); closed, it is the board's repair record: the cause,
# every step and check with how it went (evidence), and why it ended (reason).
remediations = sa.Table(
    "remediations",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("board_id", sa.String(200), sa.ForeignKey("boards.id"), nullable=False),
    sa.Column("opened_at", Time, nullable=False),
    sa.Column("cause", sa.Text, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("phase", sa.String(20), nullable=False),
    sa.Column("since", Time, nullable=False),
    sa.Column("deadline", Time, nullable=False),
    sa.Column("evidence", Json, nullable=False),
    sa.Column("op_id", sa.Integer),
    sa.Column("check_job_id", sa.Integer),
    sa.Column("closed_at", Time),
    sa.Column("outcome", sa.String(20)),
    sa.Column("reason", sa.Text),
    sa.Index("ix_remediations_board_id_id", "board_id", "id"),
    sa.Index("ix_remediations_closed_at", "closed_at"),
)

# The firmware registry: images per generation (the bytes are a blob), and which one is the
# generation's standard (what onboarding flashes; at most one per generation).
firmware_images = sa.Table(
    "firmware_images",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("generation", sa.String(100), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("notes", sa.Text, nullable=False),
    sa.Column("hardware_revisions", Json, nullable=False),
    sa.Column("standard", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("uploaded_by", sa.String(100), nullable=False),
    sa.Column("uploaded_at", Time, nullable=False),
    sa.UniqueConstraint("generation", "version", name="uq_firmware_images_generation_version"),
)

# The declared inventory (``fleetyard inventory sync``): hosts in racks and sites, and the boards
# each should hold. A board's identity is its serial; where agents find it is in ``boards``.
inventory_hosts = sa.Table(
    "inventory_hosts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("site", sa.String(100), nullable=False),
    sa.Column("rack", sa.String(100), nullable=False),
    sa.Column("synced_at", Time, nullable=False),
)

inventory_boards = sa.Table(
    "inventory_boards",
    metadata,
    sa.Column("serial", sa.String(200), primary_key=True),
    sa.Column("host_id", sa.String(200), nullable=False),
    sa.Column("slot", sa.Integer, nullable=False),
    sa.Column("generation", sa.String(100), nullable=False),
    sa.Column("hardware_revision", sa.String(100)),
    sa.Column("synced_at", Time, nullable=False),
)

# Fleet-wide settings an operator changes without restarting anything (e.g. the inventory's
# auto-approve rules and the onboarding parallelism), one JSON value per key.
settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", Json, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("updated_by", sa.String(100), nullable=False),
)

# A board's run through onboarding (queued, inspect, flash, burn-in; then done or failed), kept
# as its record: what each step found (evidence) and how it ended.
onboardings = sa.Table(
    "onboardings",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("board_id", sa.String(200), sa.ForeignKey("boards.id"), nullable=False),
    sa.Column("batch", sa.String(200), nullable=False),
    sa.Column("step", sa.String(20), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("step_at", Time, nullable=False),
    sa.Column("finished_at", Time),
    sa.Column("outcome", sa.String(20)),
    sa.Column("op_id", sa.Integer),
    sa.Column("check_job_id", sa.Integer),
    sa.Column("evidence", Json, nullable=False),
    sa.Index("ix_onboardings_board_id_id", "board_id", "id"),
    sa.Index("ix_onboardings_batch", "batch"),
    sa.Index("ix_onboardings_finished_at", "finished_at"),
)

# A staged firmware rollout of one generation to one version: its plan (waves, soak, gates),
# each wave's figures and verdict (waves), and where it stands.
rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("generation", sa.String(100), nullable=False),
    sa.Column("version", sa.String(100), nullable=False),
    sa.Column("image", sa.String(64), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("plan", Json, nullable=False),
    sa.Column("waves", Json, nullable=False),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("created_by", sa.String(100), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("updated_at", Time, nullable=False),
    sa.Column("ended_at", Time),
    sa.Column("message", sa.Text),
    sa.Index("ix_rollouts_generation_state", "generation", "state"),
)

# Each board of a rollout: its wave (-1: a control board), how far it got, and what it ran
# before (what a rollback flashes back).
rollout_boards = sa.Table(
    "rollout_boards",
    metadata,
    sa.Column("rollout_id", sa.Integer, sa.ForeignKey("rollouts.id"), primary_key=True),
    sa.Column("board_id", sa.String(200), primary_key=True),
    sa.Column("wave", sa.Integer, nullable=False),
    sa.Column("step", sa.String(20), nullable=False),
    sa.Column("from_version", sa.String(100), nullable=False),
    sa.Column("from_image", sa.String(64)),
    sa.Column("op_id", sa.Integer),
    sa.Column("check_job_id", sa.Integer),
    sa.Column("step_at", Time, nullable=False),
    sa.Column("flashed_at", Time),
    sa.Column("message", sa.Text),
    sa.Index("ix_rollout_boards_board_id", "board_id"),
)

# A pipeline run: its spec as parsed (params filled in), and how it ended (state: running, or
# its verdict: succeeded, failed, gated, timed_out, canceled).
pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("spec", Json, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("owner", sa.String(100), nullable=False),
    sa.Column("team", sa.String(100), nullable=False),
    sa.Column("created_at", Time, nullable=False),
    sa.Column("finished_at", Time),
    sa.Column("message", sa.Text),
    sa.Index("ix_pipeline_runs_state", "state"),
)

# Each instance of a run's stages (one per matrix combination): its current job and what the
# last one reported (metrics, outputs by name -> blob sha256).
pipeline_stages = sa.Table(
    "pipeline_stages",
    metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("pipeline_runs.id"), primary_key=True),
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("stage", sa.String(200), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("matrix", Json, nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("job_id", sa.Integer),
    sa.Column("metrics", Json, nullable=False),
    sa.Column("outputs", Json, nullable=False),
    sa.Column("gated", sa.Boolean, nullable=False),
    sa.Column("message", sa.Text),
    sa.Column("updated_at", Time, nullable=False),
)
