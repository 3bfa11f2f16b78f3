"""remediations (a failing board's case on the ladder: its repair record); boards' L1 bookkeeping;
jobs.not_before (a lost host's work waits a grace period before it runs elsewhere)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 22:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "remediations",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("board_id", sa.String(length=200), nullable=False),
        sa.Column("opened_at", sa.Double(), nullable=False),
        sa.Column("cause", sa.Text(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.Column("deadline", sa.Double(), nullable=False),
        sa.Column(
            "evidence", sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"), nullable=False
        ),
        sa.Column("op_id", sa.Integer(), nullable=True),
        sa.Column("check_job_id", sa.Integer(), nullable=True),
        sa.Column("closed_at", sa.Double(), nullable=True),
        sa.Column("outcome", sa.String(length=20), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["board_id"], ["boards.id"], name=op.f("fk_remediations_board_id_boards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remediations")),
    )
    op.create_index("ix_remediations_board_id_id", "remediations", ["board_id", "id"], unique=False)
    op.create_index("ix_remediations_closed_at", "remediations", ["closed_at"], unique=False)
    with op.batch_alter_table("boards") as batch:
        batch.add_column(sa.Column("l1_at", sa.Double(), nullable=True))
        batch.add_column(sa.Column("jobs_since_l1", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("check_due", sa.Text(), nullable=True))
        batch.add_column(sa.Column("check_job_id", sa.Integer(), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("not_before", sa.Double(), nullable=True))
    op.create_index("ix_assignments_finished_at", "assignments", ["finished_at"], unique=False)
    # Boards in the fleet already passed their onboarding: their L1 clock starts now.
    op.execute("UPDATE boards SET l1_at = state_changed_at")


def downgrade() -> None:
    op.drop_index("ix_assignments_finished_at", table_name="assignments")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("not_before")
    with op.batch_alter_table("boards") as batch:
        batch.drop_column("check_job_id")
        batch.drop_column("check_due")
        batch.drop_column("jobs_since_l1")
        batch.drop_column("l1_at")
    op.drop_index("ix_remediations_closed_at", table_name="remediations")
    op.drop_index("ix_remediations_board_id_id", table_name="remediations")
    op.drop_table("remediations")
