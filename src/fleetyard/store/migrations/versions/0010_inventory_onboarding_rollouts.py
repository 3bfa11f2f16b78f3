"""inventory (expected hosts and boards, synced from a file), settings, boards.hardware_revision
and .onboard_batch, onboardings (a board's run through the onboarding steps), rollouts and
rollout_boards (staged firmware rollouts: waves, gates, rollback)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 23:40:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "inventory_hosts",
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("site", sa.String(length=100), nullable=False),
        sa.Column("rack", sa.String(length=100), nullable=False),
        sa.Column("synced_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inventory_hosts")),
    )
    op.create_table(
        "inventory_boards",
        sa.Column("serial", sa.String(length=200), nullable=False),
        sa.Column("host_id", sa.String(length=200), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("generation", sa.String(length=100), nullable=False),
        sa.Column("hardware_revision", sa.String(length=100), nullable=True),
        sa.Column("synced_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("serial", name=op.f("pk_inventory_boards")),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", _json(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )
    with op.batch_alter_table("boards") as batch:
        batch.add_column(sa.Column("hardware_revision", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("onboard_batch", sa.String(length=200), nullable=True))
    op.create_table(
        "onboardings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("board_id", sa.String(length=200), nullable=False),
        sa.Column("batch", sa.String(length=200), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("step_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("op_id", sa.Integer(), nullable=True),
        sa.Column("check_job_id", sa.Integer(), nullable=True),
        sa.Column("evidence", _json(), nullable=False),
        sa.ForeignKeyConstraint(["board_id"], ["boards.id"], name=op.f("fk_onboardings_board_id_boards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_onboardings")),
    )
    op.create_index("ix_onboardings_board_id_id", "onboardings", ["board_id", "id"])
    op.create_index("ix_onboardings_batch", "onboardings", ["batch"])
    op.create_index("ix_onboardings_finished_at", "onboardings", ["finished_at"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("generation", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("image", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("plan", _json(), nullable=False),
        sa.Column("waves", _json(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("ended_at", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
    )
    op.create_index("ix_rollouts_generation_state", "rollouts", ["generation", "state"])
    op.create_table(
        "rollout_boards",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("board_id", sa.String(length=200), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(length=20), nullable=False),
        sa.Column("from_version", sa.String(length=100), nullable=False),
        sa.Column("from_image", sa.String(length=64), nullable=True),
        sa.Column("op_id", sa.Integer(), nullable=True),
        sa.Column("check_job_id", sa.Integer(), nullable=True),
        sa.Column("step_at", sa.Double(), nullable=False),
        sa.Column("flashed_at", sa.Double(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"], name=op.f("fk_rollout_boards_rollout_id_rollouts")),
        sa.PrimaryKeyConstraint("rollout_id", "board_id", name=op.f("pk_rollout_boards")),
    )
    op.create_index("ix_rollout_boards_board_id", "rollout_boards", ["board_id"])


def downgrade() -> None:
    op.drop_index("ix_rollout_boards_board_id", table_name="rollout_boards")
    op.drop_table("rollout_boards")
    op.drop_index("ix_rollouts_generation_state", table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_index("ix_onboardings_finished_at", table_name="onboardings")
    op.drop_index("ix_onboardings_batch", table_name="onboardings")
    op.drop_index("ix_onboardings_board_id_id", table_name="onboardings")
    op.drop_table("onboardings")
    with op.batch_alter_table("boards") as batch:
        batch.drop_column("onboard_batch")
        batch.drop_column("hardware_revision")
    op.drop_table("settings")
    op.drop_table("inventory_boards")
    op.drop_table("inventory_hosts")
