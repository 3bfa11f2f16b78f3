"""firmware_images: the firmware registry, images per generation and each generation's standard;
board_ops.image and .version (a flash names the image it writes)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "firmware_images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("generation", sa.String(length=100), nullable=False),
        sa.Column("version", sa.String(length=100), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column(
            "hardware_revisions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("standard", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("uploaded_by", sa.String(length=100), nullable=False),
        sa.Column("uploaded_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_firmware_images")),
        sa.UniqueConstraint("generation", "version", name="uq_firmware_images_generation_version"),
    )
    with op.batch_alter_table("board_ops") as batch:
        batch.add_column(sa.Column("image", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("version", sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("board_ops") as batch:
        batch.drop_column("version")
        batch.drop_column("image")
    op.drop_table("firmware_images")
