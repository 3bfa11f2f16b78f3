"""scheduling: queues, priority classes, fair-share usage, reservations; leases, warm boards, reasons;
hosts.offline_since

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "queues",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("cohort", sa.String(length=100), nullable=True),
        sa.Column("nominal", Json, nullable=True),
        sa.Column("borrowing_limit", Json, nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_queues")),
    )
    op.create_table(
        "priority_classes",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.Column("is_default", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_priority_classes")),
    )
    op.create_table(
        "queue_usage",
        sa.Column("queue", sa.String(length=100), nullable=False),
        sa.Column("usage", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_queue_usage")),
    )
    op.create_table(
        "reservations",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("boards", Json, nullable=False),
        sa.Column("expected_start", sa.Double(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_reservations")),
    )
    with op.batch_alter_table("boards", schema=None) as batch_op:
        batch_op.add_column(sa.Column("warm", Json, server_default="[]", nullable=False))
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("offline_since", sa.Double(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("lease_expires_at", sa.Double(), nullable=True))
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("preempted_for", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts", schema=None) as batch_op:
        batch_op.drop_column("preempted_for")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("pending_reason")
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_column("offline_since")
    with op.batch_alter_table("boards", schema=None) as batch_op:
        batch_op.drop_column("warm")
    op.drop_table("reservations")
    op.drop_table("queue_usage")
    op.drop_table("priority_classes")
    op.drop_table("queues")
