"""Tables of the backend store.

Table names carry an `artifactd_` prefix (and Alembic's version table is ours too), so the store
can share a database with MLflow's tracking tables without either touching the other's rows.
Times are integer milliseconds since the epoch, as in MLflow.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ACTIVE = "active"
DELETED = "deleted"
MAX_NAME_LENGTH = 256
MAX_LOCATION_LENGTH = 2048


def exact_string(length: int) -> String:
    """A VARCHAR compared byte for byte everywhere: MySQL/MariaDB default collations ignore case,
    which would make names and artifact locations that differ only in case collide there."""
    return String(length).with_variant(
        mysql.VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


class Base(DeclarativeBase):
    pass


class ExperimentRow(Base):
    __tablename__ = "artifactd_experiments"
    __table_args__ = (
        UniqueConstraint("name", name="uq_artifactd_experiments_name"),
        Index("ix_artifactd_experiments_lifecycle_stage", "lifecycle_stage"),
    )

    experiment_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(exact_string(MAX_NAME_LENGTH))
    artifact_location: Mapped[str] = mapped_column(exact_string(MAX_LOCATION_LENGTH))
    lifecycle_stage: Mapped[str] = mapped_column(String(16))
    creation_time: Mapped[int] = mapped_column(BigInteger)
    last_update_time: Mapped[int] = mapped_column(BigInteger)


class RunRow(Base):
    __tablename__ = "artifactd_runs"
    __table_args__ = (
        Index("ix_artifactd_runs_experiment_stage", "experiment_id", "lifecycle_stage"),
        Index("ix_artifactd_runs_stage_deleted_time", "lifecycle_stage", "deleted_time"),
        Index("ix_artifactd_runs_start_time", "start_time", "run_id"),
    )

    run_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    experiment_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("artifactd_experiments.experiment_id", name="fk_artifactd_runs_experiment"),
    )
    run_name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    artifact_uri: Mapped[str] = mapped_column(String(MAX_LOCATION_LENGTH))
    lifecycle_stage: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    start_time: Mapped[int] = mapped_column(BigInteger)
    end_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deleted_time: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Set when the run was deleted by deleting its experiment: restoring the experiment restores
    # exactly these, not runs someone had deleted on their own before.
    deleted_with_experiment: Mapped[bool] = mapped_column(Boolean, default=False)


MULTIPART = "multipart"  # presigned parts straight to storage
RESUMABLE = "resumable"  # streamed through the server, kept across broken connections
STREAMED = "streamed"  # a plain LogArtifact(s) stream's storage-side upload, for the sweeper only


class MultipartUploadRow(Base):
    """An open direct (presigned) or resumable upload: who may finish it, and where it lands.

    The destination (`root_uri`, `path`) is fixed at creation and never taken from a later
    request, so a session can only ever publish the file it was created for.

    A STREAMED row is no session a client holds (its id is never sent): it records what a
    server streaming a file to storage started there (`backend_upload_id` is the storage's
    cleanup handle: an S3 multipart upload id), so that a sweeper can discard it if that
    server dies mid-stream (`domain.streamed`). `size` is 0 when the stream declared none.
    """

    __tablename__ = "artifactd_multipart_uploads"
    __table_args__ = (Index("ix_artifactd_multipart_uploads_expiry", "expiry_time"),)

    upload_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # MULTIPART or RESUMABLE
    root_uri: Mapped[str] = mapped_column(exact_string(MAX_LOCATION_LENGTH))
    path: Mapped[str] = mapped_column(exact_string(MAX_LOCATION_LENGTH))
    run_id: Mapped[str] = mapped_column(String(32))  # "" for plain paths
    owner: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))  # "" until authentication
    backend_upload_id: Mapped[str] = mapped_column(String(1024))
    size: Mapped[int] = mapped_column(BigInteger)
    part_size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))  # "" when not declared
    overwrite: Mapped[bool] = mapped_column(Boolean)
    creation_time: Mapped[int] = mapped_column(BigInteger)
    expiry_time: Mapped[int] = mapped_column(BigInteger)
