"""Open direct (presigned multipart) and resumable uploads.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from artifactd_server.store.migrations.types import exact_string

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifactd_multipart_uploads",
        sa.Column("upload_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("root_uri", exact_string(2048), nullable=False),
        sa.Column("path", exact_string(2048), nullable=False),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("backend_upload_id", sa.String(1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("part_size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("overwrite", sa.Boolean(), nullable=False),
        sa.Column("creation_time", sa.BigInteger(), nullable=False),
        sa.Column("expiry_time", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_artifactd_multipart_uploads_expiry", "artifactd_multipart_uploads", ["expiry_time"]
    )


def downgrade() -> None:
    op.drop_table("artifactd_multipart_uploads")
