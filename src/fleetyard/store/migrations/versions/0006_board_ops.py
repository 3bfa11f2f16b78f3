"""board_ops: remediation steps ordered for a board and carried out by its host's agent

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "board_ops",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("board_id", sa.String(length=200), nullable=False),
        sa.Column("op", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("ordered_at", sa.Double(), nullable=False),
        sa.Column("timeout_s", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("reported_at", sa.Double(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["board_id"], ["boards.id"], name=op.f("fk_board_ops_board_id_boards")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_board_ops")),
    )
    op.create_index("ix_board_ops_board_id_id", "board_ops", ["board_id", "id"], unique=False)
    op.create_index("ix_board_ops_finished_at", "board_ops", ["finished_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_board_ops_finished_at", table_name="board_ops")
    op.drop_index("ix_board_ops_board_id_id", table_name="board_ops")
    op.drop_table("board_ops")
