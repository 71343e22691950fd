"""Experiments and runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from artifactd_server.store.migrations.types import exact_string

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifactd_experiments",
        sa.Column("experiment_id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", exact_string(256), nullable=False),
        sa.Column("artifact_location", exact_string(2048), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("creation_time", sa.BigInteger(), nullable=False),
        sa.Column("last_update_time", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("name", name="uq_artifactd_experiments_name"),
    )
    op.create_index(
        "ix_artifactd_experiments_lifecycle_stage", "artifactd_experiments", ["lifecycle_stage"]
    )
    op.create_table(
        "artifactd_runs",
        sa.Column("run_id", sa.String(32), primary_key=True),
        sa.Column(
            "experiment_id",
            sa.Integer(),
            sa.ForeignKey(
                "artifactd_experiments.experiment_id", name="fk_artifactd_runs_experiment"
            ),
            nullable=False,
        ),
        sa.Column("run_name", sa.String(256), nullable=False),
        sa.Column("artifact_uri", sa.String(2048), nullable=False),
        sa.Column("lifecycle_stage", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("start_time", sa.BigInteger(), nullable=False),
        sa.Column("end_time", sa.BigInteger(), nullable=True),
        sa.Column("deleted_time", sa.BigInteger(), nullable=True),
        sa.Column("deleted_with_experiment", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_artifactd_runs_experiment_stage", "artifactd_runs", ["experiment_id", "lifecycle_stage"]
    )
    op.create_index(
        "ix_artifactd_runs_stage_deleted_time",
        "artifactd_runs",
        ["lifecycle_stage", "deleted_time"],
    )
    op.create_index("ix_artifactd_runs_start_time", "artifactd_runs", ["start_time", "run_id"])


def downgrade() -> None:
    op.drop_table("artifactd_runs")
    op.drop_table("artifactd_experiments")
