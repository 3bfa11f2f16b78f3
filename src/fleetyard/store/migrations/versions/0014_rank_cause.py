"""assignments.cause: what ended a rank (its workload, or a stop: host lost, agent stopped, ...)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Ranks that ended before keep NULL: their cause was never recorded (policy.outcomes judges
    # them by their outcome alone).
    with op.batch_alter_table("assignments") as batch:
        batch.add_column(sa.Column("cause", sa.String(20)))


def downgrade() -> None:
    with op.batch_alter_table("assignments") as batch:
        batch.drop_column("cause")
