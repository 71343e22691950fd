"""`ArtifactdArtifactRepository`: MLflow's `ArtifactRepository` over an artifactd server.

MLflow picks it for `artifactd://host:port/<path>` artifact URIs (the `mlflow.artifact_repository`
entry point `artifactd`). The URI's path is the repository's root inside the server's default
artifact root; every `artifact_path` MLflow passes is relative to it, and so are the paths
`list_artifacts` returns and where downloads land under `dst_path` — MLflow's layout. The bytes
move through `ArtifactClient`: streamed, atomic, verified against the server's sha256, direct to
storage for large files where the server's storage can presign.

Differences from MLflow's own repositories, on purpose:
- a path that breaks artifactd's path grammar (`..`, absolute, `\\`, `#`, ...) is refused with
  INVALID_PARAMETER_VALUE before anything is sent;
- `list_artifacts` of a missing path or of a file is `[]` (as MLflow's local repository), but
  `download_artifacts` of a missing path raises RESOURCE_DOES_NOT_EXIST (a missing repository
  root gives back the empty destination, as MLflow does);
- deleting the server's whole artifact root is refused;
- client-side storage variables (`MLFLOW_S3_ENDPOINT_URL`, ...) change nothing: the server alone
  decides where artifacts are stored (the client warns once, see `artifactd.client.target`);
- inside an MLflow tracking server process, an `artifactd://` URI must name the server of the
  tracking server's own `--default-artifact-root` / `--artifacts-destination`, as MLflow's host
  policy does for its host-addressed schemes (`MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES`
  containing `artifactd` lifts it).

One gRPC channel per repository object, opened on first use (and again in a forked child), closed
by `close()` or when the object is garbage-collected.
"""

from __future__ import annotations

import asyncio
import io
import os
import posixpath
import threading
import uuid
import weakref
from collections.abc import AsyncIterable, Iterator
from contextlib import contextmanager
from typing import Any

from artifactd.client import ArtifactClient
from artifactd.client.client import Readable
from artifactd.client.streams import ChunkQueue
from artifactd.client.target import server_uri
from artifactd.protocol import errors
from artifactd.protocol.paths import ArtifactPath, join, parse
from mlflow.entities.file_info import FileInfo
from mlflow.environment_variables import MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES
from mlflow.exceptions import MlflowException
from mlflow.protos import databricks_pb2
from mlflow.store.artifact.artifact_repo import ArtifactRepository, StreamUploadMixin
from mlflow.utils.file_utils import create_tmp_dir

SCHEME = "artifactd"

# The names MLflow gives a trace's data and its archived spans in a trace's artifact location
# (`mlflow.tracing.utils.artifact_utils`, `mlflow.tracing.otel.otel_archival`).
_TRACE_DATA_FILE = "traces.json"
_TRACE_ARCHIVE_FILE = "traces.pb"
_STREAM_QUEUE_CHUNKS = 8
"""Chunks of an async request body held between MLflow's event loop and the upload thread."""

# What `mlflow server` exports to its workers and jobs: its default artifact root (present in
# every tracking server process, so it marks one) and its artifacts destination. The names are
# MLflow's (`mlflow.server.constants`, mirrored in `mlflow.store.artifact.host_policy`).
_SERVER_ARTIFACT_ROOT = "_MLFLOW_SERVER_ARTIFACT_ROOT"
_SERVER_ARTIFACTS_DESTINATION = "_MLFLOW_SERVER_ARTIFACT_DESTINATION"

_ERROR_CODES: dict[type[errors.ArtifactError], int] = {
    errors.InvalidArgument: databricks_pb2.INVALID_PARAMETER_VALUE,
    errors.OutOfRange: databricks_pb2.INVALID_PARAMETER_VALUE,
    errors.NotFound: databricks_pb2.RESOURCE_DOES_NOT_EXIST,
    errors.AlreadyExists: databricks_pb2.RESOURCE_ALREADY_EXISTS,
    errors.FailedPrecondition: databricks_pb2.INVALID_STATE,
    errors.PermissionDenied: databricks_pb2.PERMISSION_DENIED,
    errors.Unauthenticated: databricks_pb2.UNAUTHENTICATED,
    errors.DataLoss: databricks_pb2.DATA_LOSS,
    errors.Aborted: databricks_pb2.ABORTED,
    errors.ResourceExhausted: databricks_pb2.RESOURCE_EXHAUSTED,
    errors.Unavailable: databricks_pb2.TEMPORARILY_UNAVAILABLE,
    errors.DeadlineExceeded: databricks_pb2.DEADLINE_EXCEEDED,
    errors.Cancelled: databricks_pb2.CANCELLED,
    errors.Unimplemented: databricks_pb2.NOT_IMPLEMENTED,
}


def mlflow_error(exc: errors.ArtifactError) -> MlflowException:
    """The `MlflowException` for an artifactd error, with the matching MLflow error code."""
    for kind in type(exc).__mro__:
        code = _ERROR_CODES.get(kind)
        if code is not None:
            return MlflowException(exc.message, error_code=code)
    return MlflowException(exc.message, error_code=databricks_pb2.INTERNAL_ERROR)


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except errors.ArtifactError as exc:
        raise mlflow_error(exc) from exc


class ArtifactdArtifactRepository(ArtifactRepository, StreamUploadMixin):
    """MLflow artifact repository for `artifactd://host:port/<path>` URIs.

    As a `StreamUploadMixin`, a tracking server proxying uploads (`--artifacts-destination
    artifactd://...`) streams each request body straight into artifactd instead of writing it
    to a temporary file first; trace data and attachments go up from memory likewise.
    """

    def __init__(
        self,
        artifact_uri: str,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
    ) -> None:
        super().__init__(artifact_uri, tracking_uri, registry_uri)
        self.target, self.root = _parse_uri(artifact_uri)
        _check_server_host_policy(artifact_uri, self.target)
        self._lock = threading.Lock()
        self._open: dict[str, Any] = {}  # "client", "pid": shared with the finalizer
        self._finalizer = weakref.finalize(self, _close, self._open)

    # -- the connection --------------------------------------------------------------------

    def _client(self) -> ArtifactClient:
        with self._lock:
            client = self._open.get("client")
            if client is not None and self._open.get("pid") == os.getpid():
                return client  # type: ignore[no-any-return]
            # none yet, or inherited across fork(): a gRPC channel is not usable in the child,
            # and closing the parent's there is not safe either, so it is left alone
            with _translated():
                client = ArtifactClient(self.target)
            self._open.update(client=client, pid=os.getpid())
            return client

    def close(self) -> None:
        """Closes the repository's channel (a later call opens a new one)."""
        with self._lock:
            _close(self._open)

    # -- paths -----------------------------------------------------------------------------

    def _full(self, artifact_path: str | None) -> ArtifactPath:
        """The server path of an `artifact_path` relative to the repository root."""
        if artifact_path is None:
            return self.root
        relative = os.fspath(artifact_path)
        if relative.endswith("/") and relative.strip("/"):
            relative = relative.rstrip("/")  # MLflow callers sometimes pass "dir/"
        try:
            return join(self.root, *parse(relative, allow_root=True).parts)
        except errors.InvalidArgument as exc:  # MLflow's own wording, then the rule broken
            raise MlflowException(
                f"Invalid artifact path {artifact_path!r}: {exc.message}",
                error_code=databricks_pb2.INVALID_PARAMETER_VALUE,
            ) from exc

    def _relative(self, path: str) -> str:
        return "/".join(parse(path, allow_root=True).parts[len(self.root.parts) :])

    # -- ArtifactRepository ----------------------------------------------------------------

    def log_artifact(self, local_file: str, artifact_path: str | None = None) -> None:
        directory = self._full(artifact_path)
        with _translated():
            self._client().log_artifact(local_file, str(directory))

    def log_artifacts(self, local_dir: str, artifact_path: str | None = None) -> None:
        directory = self._full(artifact_path)
        with _translated():
            self._client().log_artifacts(local_dir, str(directory))

    def log_artifact_from_stream(
        self, stream: Readable, artifact_file_name: str, artifact_path: str | None = None
    ) -> None:
        """Uploads a binary stream as `<artifact_path>/<artifact_file_name>` with no temporary
        copy; published atomically once the stream ends, nothing stored if it breaks."""
        name = posixpath.basename(artifact_file_name)  # MLflow's contract: directories ignored
        target = self._full(posixpath.join(artifact_path, name) if artifact_path else name)
        with _translated():
            self._client().log_stream(stream, str(target))

    async def log_artifact_from_async_stream(
        self,
        chunks: AsyncIterable[bytes],
        artifact_file_name: str,
        artifact_path: str | None = None,
    ) -> None:
        """The async form (MLflow's FastAPI upload route): the upload runs in a thread reading
        the chunks the event loop hands over through a small bounded queue."""
        body = ChunkQueue(_STREAM_QUEUE_CHUNKS)

        def upload() -> None:
            try:
                self.log_artifact_from_stream(body, artifact_file_name, artifact_path)
            finally:
                body.abandon()  # unblocks the event loop if the upload failed early

        task = asyncio.ensure_future(asyncio.to_thread(upload))
        try:
            async for chunk in chunks:
                if not await asyncio.to_thread(body.put, bytes(chunk)):
                    break  # the upload ended early: its error is raised below
        except BaseException as exc:
            body.fail(exc)  # the request body broke: the upload stores nothing
            await asyncio.gather(task, return_exceptions=True)
            raise
        body.finish()
        await task

    def upload_trace_data(self, trace_data: str) -> None:
        self.log_artifact_from_stream(io.BytesIO(trace_data.encode("utf-8")), _TRACE_DATA_FILE)

    def upload_archived_trace_data_bytes(self, data: bytes) -> None:
        self.log_artifact_from_stream(io.BytesIO(data), _TRACE_ARCHIVE_FILE)

    def upload_attachment(self, attachment_id: str, content_bytes: bytes) -> None:
        try:  # MLflow's rule: an attachment id is a canonical UUID (no path can hide in it)
            canonical = str(uuid.UUID(attachment_id)) == attachment_id
        except (ValueError, TypeError, AttributeError):
            canonical = False
        if not canonical:
            raise MlflowException(
                f"Invalid attachment path: {attachment_id!r}. "
                "Attachment path must be a valid UUID.",
                error_code=databricks_pb2.INVALID_PARAMETER_VALUE,
            )
        self.log_artifact_from_stream(io.BytesIO(content_bytes), attachment_id, "attachments")

    def list_artifacts(self, path: str | None = None) -> list[FileInfo]:
        """Direct children of `path`, relative to the repository root; `[]` for a missing path
        or a file."""
        directory = self._full(path)
        with _translated():
            try:
                entries = self._client().list_artifacts(str(directory))
            except (errors.NotFound, errors.FailedPrecondition):
                return []
            listed = [
                FileInfo(self._relative(e.path), e.is_dir, None if e.is_dir else e.file_size)
                for e in entries
            ]
        return sorted(listed, key=lambda info: info.path)

    def _is_directory(self, artifact_path: str | None) -> bool:
        with _translated():
            try:
                return self._client().get_artifact_info(str(self._full(artifact_path))).is_dir
            except errors.NotFound:
                return False

    def download_artifacts(self, artifact_path: str | None, dst_path: str | None = None) -> str:
        """Downloads a file or tree to `dst_path/<artifact_path>` in one verified stream."""
        if dst_path:
            dst = os.path.abspath(dst_path)
            if not os.path.exists(dst):
                raise MlflowException(
                    "The destination path for downloaded artifacts does not exist! "
                    f"Destination path: {dst}",
                    error_code=databricks_pb2.RESOURCE_DOES_NOT_EXIST,
                )
            if not os.path.isdir(dst):
                raise MlflowException(
                    "The destination path for downloaded artifacts must be a directory! "
                    f"Destination path: {dst}",
                    error_code=databricks_pb2.INVALID_PARAMETER_VALUE,
                )
        else:
            dst = create_tmp_dir()
        path = self._full(artifact_path)
        with _translated():
            try:
                return self._client().download_artifacts(str(path), dst, relative_to=str(self.root))
            except errors.NotFound:
                if path == self.root:  # nothing logged yet: MLflow returns the empty destination
                    return dst
                raise

    def _download_file(self, remote_file_path: str, local_path: str | os.PathLike[str]) -> None:
        """One file to exactly `local_path` (MLflow's trace and attachment helpers use this)."""
        path = self._full(remote_file_path)
        with _translated():
            self._client().download_file(str(path), local_path)

    def delete_artifacts(self, artifact_path: str | None = None) -> None:
        """Deletes a file or tree (idempotent); `None` deletes the repository root."""
        path = self._full(artifact_path)
        if path.is_root:
            raise MlflowException(
                f"{self.artifact_uri} is the artifactd server's whole artifact root; "
                "it cannot be deleted",
                error_code=databricks_pb2.INVALID_PARAMETER_VALUE,
            )
        with _translated():
            self._client().delete_artifacts(str(path))


def _close(state: dict[str, Any]) -> None:
    client = state.pop("client", None)
    pid = state.pop("pid", None)
    if client is not None and pid == os.getpid():
        client.close()


def _parse_uri(artifact_uri: str) -> tuple[str | None, ArtifactPath]:
    """(server target or None for the configured one, root path) of an `artifactd://` URI."""
    with _translated():
        location = server_uri(artifact_uri, SCHEME)
    return location.target, location.path


def _check_server_host_policy(artifact_uri: str, target: str | None) -> None:
    """Inside an MLflow tracking server, only its own artifactd server is connected to."""
    if _SERVER_ARTIFACT_ROOT not in os.environ or target is None:
        return  # a client process, or the operator's configured server (ARTIFACTD_SERVER)
    allowed = {s.lower() for s in MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES.get()}
    if SCHEME in allowed:
        return
    trusted = set()
    for variable in (_SERVER_ARTIFACT_ROOT, _SERVER_ARTIFACTS_DESTINATION):
        uri = os.environ.get(variable, "")
        if uri.partition(":")[0].lower() == SCHEME:
            try:
                trusted.add(_parse_uri(uri)[0])
            except MlflowException:
                continue
    if target not in trusted:
        raise MlflowException(
            f"The tracking server does not connect to artifact location {artifact_uri!r}: it "
            "names an artifactd server other than the one of the server's "
            "--default-artifact-root or --artifacts-destination. Set "
            f"{MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES.name}=artifactd on the server to "
            "allow it.",
            error_code=databricks_pb2.INVALID_PARAMETER_VALUE,
        )


__all__ = ["SCHEME", "ArtifactdArtifactRepository", "mlflow_error"]
