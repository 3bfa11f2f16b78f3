"""priority_classes.teams: the teams allowed to submit in a class (null: every team)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
    op.add_column("priority_classes", sa.Column("teams", json, nullable=True))


def downgrade() -> None:
    op.drop_column("priority_classes", "teams")
