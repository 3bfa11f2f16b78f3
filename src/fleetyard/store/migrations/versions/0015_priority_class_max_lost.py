"""priority_classes.max_lost_s: the most work per board a class's preemptions may throw away

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08 00:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Classes configured before keep NULL: no cap, as they behaved.
    with op.batch_alter_table("priority_classes") as batch:
        batch.add_column(sa.Column("max_lost_s", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("priority_classes") as batch:
        batch.drop_column("max_lost_s")
