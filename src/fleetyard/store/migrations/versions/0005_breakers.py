"""breakers: a generation's circuit breaker trips and resets

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 20:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "breakers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("generation", sa.String(length=100), nullable=False),
        sa.Column("tripped_at", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reset_at", sa.Double(), nullable=True),
        sa.Column("reset_by", sa.String(length=100), nullable=True),
        sa.Column("reset_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_breakers")),
    )
    op.create_index(op.f("ix_breakers_generation"), "breakers", ["generation"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_breakers_generation"), table_name="breakers")
    op.drop_table("breakers")
