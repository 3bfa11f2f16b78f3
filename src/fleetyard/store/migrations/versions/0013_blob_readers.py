"""blob_readers: the teams that read a blob (its uploader's, its making job's, "*" for all)

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "blob_readers",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("team", sa.String(100), primary_key=True),
    )
    # Who uploaded a blob before was never recorded: every team keeps reading what it could.
    op.execute("INSERT INTO blob_readers (sha256, team) SELECT sha256, '*' FROM blobs")


def downgrade() -> None:
    op.drop_table("blob_readers")
