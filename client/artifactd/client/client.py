"""ArtifactClient: upload, list, download and delete artifacts on an artifactd server.

The method names and semantics follow MLflow's `ArtifactRepository` where they make sense:
`artifact_path` is a directory and an uploaded file keeps its base name; downloads land at
`dst_path/<artifact_path>`. Unlike MLflow, a missing path raises `NotFound`, every transfer is
verified against the server's sha256, and calls that are safe to repeat are retried with backoff
when the server is UNAVAILABLE (downloads resume from the last byte received).
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, BinaryIO, TypeVar

import grpc
from tqdm import tqdm

from artifactd import malloc
from artifactd.client.localfiles import Destination, VerifiedFile
from artifactd.client.settings import SERVER_VARIABLE, ClientSettings
from artifactd.client.target import (
    DEFAULT_TARGET,
    Location,
    guard_environment,
    resolve,
    strict_from_env,
)
from artifactd.errors import (
    ArtifactError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    from_status,
)
from artifactd.paths import ArtifactPath, join, parse
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

T = TypeVar("T")

MAX_MESSAGE_SIZE = 16 * 1024 * 1024
BATCH_FILES = 10_000
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
    ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 0),
]
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


@dataclass(frozen=True)
class ArtifactInfo:
    """One stored file or directory, as the server describes it."""

    path: str
    is_dir: bool
    file_size: int
    sha256: str | None
    modified: datetime | None

    @classmethod
    def from_proto(cls, info: pb.FileInfo) -> ArtifactInfo:
        modified = None
        if info.HasField("modified_time"):
            modified = info.modified_time.ToDatetime(tzinfo=UTC)
        return cls(info.path, info.is_dir, info.file_size, info.sha256 or None, modified)


class ArtifactClient:
    """A connection to one artifactd server; use it as a context manager or call `close`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        settings: ClientSettings | None = None,
        strict_env: bool | None = None,
        progress: bool = False,
        overwrite: bool = True,
    ) -> None:
        guard_environment(strict_from_env() if strict_env is None else strict_env)
        self.target = target or os.environ.get(SERVER_VARIABLE) or DEFAULT_TARGET
        self.settings = settings or ClientSettings.from_env()
        self.progress = progress
        self.overwrite = overwrite
        malloc.keep_transfer_buffers()
        self._channel = grpc.insecure_channel(self.target, options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.ArtifactServiceStub(self._channel)

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    # -- addressing ------------------------------------------------------------------------

    def _path(self, location: str | None, *, allow_root: bool = True) -> ArtifactPath:
        """The artifact path of a plain path or URI; a URI must name this client's server."""
        resolved: Location = resolve(location, allow_root=allow_root)
        if resolved.target is not None and resolved.target != self.target:
            raise InvalidArgument(
                f"{location!r} names server {resolved.target}, but this client is connected "
                f"to {self.target}"
            )
        return resolved.path

    # -- calls -----------------------------------------------------------------------------

    def _unary(self, call: Callable[..., T], request: object) -> T:
        """A call that is safe to repeat: retried with backoff while the server is UNAVAILABLE."""
        return self._retrying(lambda: call(request, timeout=self.settings.rpc_timeout))

    def _retrying(self, attempt: Callable[[], T]) -> T:
        for tries in range(self.settings.max_retries + 1):
            try:
                return attempt()
            except grpc.RpcError as exc:
                if exc.code() not in _RETRYABLE or tries == self.settings.max_retries:
                    raise _error(exc) from None
                _backoff(tries)
        raise AssertionError("unreachable")

    def get_capabilities(self) -> pb.GetCapabilitiesResponse:
        return self._unary(self._stub.GetCapabilities, pb.GetCapabilitiesRequest())

    def get_artifact_info(self, path: str | None = None) -> ArtifactInfo:
        """Describes a file or directory; raises `artifactd.errors.NotFound` if it is neither."""
        request = pb.GetArtifactRequest(path=str(self._path(path)))
        return ArtifactInfo.from_proto(self._unary(self._stub.GetArtifact, request).file)

    def iter_artifacts(
        self, path: str | None = None, recursive: bool = False, page_size: int = 0
    ) -> Iterator[ArtifactInfo]:
        """Entries under a directory, fetched page by page as they are consumed."""
        base = self._path(path)
        directory = str(base)
        token = ""
        while True:
            request = pb.ListArtifactsRequest(
                path=directory, recursive=recursive, page_size=page_size, page_token=token
            )
            page = self._unary(self._stub.ListArtifacts, request)
            for info in page.files:
                yield _checked_info(info, base)
            token = page.next_page_token
            if not token:
                return

    def list_artifacts(
        self, path: str | None = None, recursive: bool = False
    ) -> list[ArtifactInfo]:
        """The direct children of a directory (every descendant with `recursive`)."""
        return list(self.iter_artifacts(path, recursive))

    def delete_artifacts(self, artifact_path: str) -> bool:
        """Deletes a file or directory tree; returns whether anything was there."""
        request = pb.DeleteArtifactsRequest(path=str(self._path(artifact_path, allow_root=False)))
        return self._unary(self._stub.DeleteArtifacts, request).existed

    # -- uploads ---------------------------------------------------------------------------

    def log_artifact(
        self, local_file: str | os.PathLike[str], artifact_path: str | None = None
    ) -> ArtifactInfo:
        """Uploads one file to `<artifact_path>/<its base name>`; atomic and verified."""
        local = os.fspath(local_file)
        destination = join(self._path(artifact_path), os.path.basename(local))
        with open(local, "rb") as fh, self._bar(os.fstat(fh.fileno()).st_size, local) as bar:
            header = self._header(destination, os.fstat(fh.fileno()).st_size)
            messages = _file_messages(
                fh, header, pb.LogArtifactRequest, self.settings.chunk_size, bar
            )
            try:
                response = self._stub.LogArtifact(messages, timeout=self.settings.transfer_timeout)
            except grpc.RpcError as exc:
                raise _error(exc) from None
        return ArtifactInfo.from_proto(response.file)

    def log_artifacts(
        self, local_dir: str | os.PathLike[str], artifact_path: str | None = None
    ) -> list[ArtifactInfo]:
        """Uploads a directory tree under `artifact_path`, many files per stream.

        Every file is published atomically; if some fail, the others are still stored and one
        error lists the failures.
        """
        root = os.fspath(local_dir)
        if not os.path.isdir(root):
            raise InvalidArgument(f"{root!r} is not a directory")
        base = self._path(artifact_path)
        files = [
            (
                os.path.join(d, name),
                join(base, *os.path.relpath(os.path.join(d, name), root).split(os.sep)),
            )
            for d, dirs, names in _sorted_walk(root)
            for name in names
        ]
        total = sum(os.path.getsize(local) for local, _ in files)
        stored: list[ArtifactInfo] = []
        failures: list[str] = []
        with self._bar(total, root) as bar:
            for start in range(0, len(files), BATCH_FILES):
                batch = files[start : start + BATCH_FILES]
                try:
                    response = self._stub.LogArtifacts(
                        self._batch_messages(batch, bar), timeout=self.settings.transfer_timeout
                    )
                except grpc.RpcError as exc:
                    raise _error(exc) from None
                for result in response.results:
                    if result.code == 0:
                        stored.append(ArtifactInfo.from_proto(result.file))
                    else:
                        failures.append(
                            f"{result.path}: {_code_name(result.code)} {result.message}"
                        )
        if failures:
            shown = "\n  ".join(failures[:20])
            more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
            raise ArtifactError(
                f"{len(failures)} of {len(files)} files were not stored:\n  {shown}{more}"
            )
        return stored

    def _header(self, path: ArtifactPath, size: int) -> pb.UploadHeader:
        policy = (
            pb.OVERWRITE_POLICY_OVERWRITE if self.overwrite else pb.OVERWRITE_POLICY_FAIL_IF_EXISTS
        )
        return pb.UploadHeader(path=str(path), size=size, overwrite=policy)

    def _batch_messages(
        self, batch: list[tuple[str, ArtifactPath]], bar: tqdm[Any] | None
    ) -> Iterator[pb.LogArtifactsRequest]:
        for local, path in batch:
            with open(local, "rb") as fh:
                header = self._header(path, os.fstat(fh.fileno()).st_size)
                yield from _file_messages(
                    fh, header, pb.LogArtifactsRequest, self.settings.chunk_size, bar
                )

    # -- downloads -------------------------------------------------------------------------

    def download_artifacts(
        self, artifact_path: str | None = None, dst_path: str | os.PathLike[str] | None = None
    ) -> str:
        """Downloads a file or directory to `dst_path/<artifact_path>`; returns that local path.

        `dst_path` defaults to a new temporary directory. Each file is checked against the
        server's size and sha256 before it appears under its name.
        """
        path = self._path(artifact_path)
        dst = os.fspath(dst_path) if dst_path is not None else tempfile.mkdtemp(prefix="artifactd-")
        destination = Destination(dst)
        info = self.get_artifact_info(str(path))
        if info.is_dir:
            self._retrying(lambda: self._download_tree(path, destination))
        else:
            self._download_file(path, destination.file(path.parts))
        return os.path.join(dst, *path.parts)

    def _download_file(self, path: ArtifactPath, target: str) -> None:
        download = _FileDownload(path, target, self._bar)
        try:
            for tries in range(self.settings.max_retries + 1):
                request = pb.DownloadArtifactRequest(path=str(path), offset=download.offset)
                try:
                    stream = self._stub.DownloadArtifact(
                        request, timeout=self.settings.transfer_timeout
                    )
                    for message in stream:
                        download.receive(message)
                    break
                except grpc.RpcError as exc:
                    if exc.code() not in _RETRYABLE or tries == self.settings.max_retries:
                        raise _error(exc) from None
                    _backoff(tries)  # then resume from the last byte received
            download.commit()
        finally:
            download.close()

    def _download_tree(self, root: ArtifactPath, destination: Destination) -> None:
        with self._bar(None, str(root) or "artifacts", unit="file") as bar:
            tree = _TreeDownload(root, destination, bar)
            try:
                stream = self._stub.DownloadArtifacts(
                    pb.DownloadArtifactsRequest(path=str(root)),
                    timeout=self.settings.transfer_timeout,
                )
                for message in stream:
                    tree.receive(message)
                tree.finish_file()
            finally:
                tree.close()

    # -- progress --------------------------------------------------------------------------

    def _bar(self, total: int | None, label: str, unit: str = "B") -> tqdm[Any]:
        """A progress bar that appears only for transfers taking more than half a second."""
        return tqdm(
            total=total,
            desc=os.path.basename(label.rstrip("/")) or label,
            unit=unit,
            unit_scale=unit == "B",
            unit_divisor=1024,
            delay=0.5,
            disable=not self.progress,
            leave=False,
        )


class _FileDownload:
    """One file arriving over one or more (resumed) DownloadArtifact streams."""

    def __init__(
        self, path: ArtifactPath, target: str, bar: Callable[[int, str], tqdm[Any]]
    ) -> None:
        self.path = path
        self.target = target
        self._make_bar = bar
        self._first: pb.FileInfo | None = None
        self._out: VerifiedFile | None = None
        self._bar: tqdm[Any] | None = None

    @property
    def offset(self) -> int:
        return self._out.received if self._out is not None else 0

    def receive(self, message: pb.DownloadArtifactResponse) -> None:
        if message.HasField("info"):
            self._on_info(message.info)
        if self._out is None:
            raise DataLoss(f"the server sent data for '{self.path}' before its info")
        data = message.data  # each access copies the bytes out of the message
        if data:
            self._out.write(data)
            if self._bar is not None:
                self._bar.update(len(data))

    def _on_info(self, info: pb.FileInfo) -> None:
        if self._first is None:
            checked = _checked_info(info, self.path)
            self._first = info
            self._out = VerifiedFile(self.target, checked.file_size, checked.sha256)
            self._bar = self._make_bar(checked.file_size, str(self.path))
        elif _identity(info) != _identity(self._first):
            raise DataLoss(f"'{self.path}' changed on the server during the download; retry")

    def commit(self) -> None:
        if self._out is None:
            raise DataLoss(f"the server sent nothing for '{self.path}'")
        self._out.commit()
        self._out = None

    def close(self) -> None:
        if self._out is not None:
            self._out.abort()
        if self._bar is not None:
            self._bar.close()


class _TreeDownload:
    """A DownloadArtifacts stream being written out, one verified file after another."""

    def __init__(self, root: ArtifactPath, destination: Destination, bar: tqdm[Any]) -> None:
        self.root = root
        self.destination = destination
        self.bar = bar
        self.current: VerifiedFile | None = None

    def receive(self, message: pb.DownloadArtifactsResponse) -> None:
        if message.HasField("file"):
            self.finish_file()
            info, path = _checked_path(message.file, self.root)
            if info.is_dir:
                self.destination.directory(path.parts)
            else:
                target = self.destination.file(path.parts)
                self.current = VerifiedFile(target, info.file_size, info.sha256)
                self.bar.update(1)
        data = message.data  # each access copies the bytes out of the message
        if data:
            if self.current is None:
                raise DataLoss("the server sent file data without naming the file")
            self.current.write(data)

    def finish_file(self) -> None:
        if self.current is not None:
            current, self.current = self.current, None
            current.commit()

    def close(self) -> None:
        if self.current is not None:
            self.current.abort()


def _file_messages(
    fh: BinaryIO,
    header: pb.UploadHeader,
    message_type: type[T],
    chunk_size: int,
    bar: tqdm[Any] | None,
) -> Iterator[T]:
    """header+data ... data+finish messages for one open file, hashing as it reads.

    The first chunk travels with the header and the last with the finish (a small file is one
    message). The declared size is the file's size when opened: a file that grows or shrinks
    while being sent is refused by the server rather than stored torn.
    """
    digest = hashlib.sha256()
    chunk = fh.read(chunk_size)
    first = True
    while True:
        following = fh.read(chunk_size) if chunk else b""
        digest.update(chunk)
        if bar is not None:
            bar.update(len(chunk))
        fields: dict[str, object] = {"data": chunk}
        if first:
            fields["header"] = header
            first = False
        if not following:
            fields["finish"] = pb.UploadFinish(sha256=digest.hexdigest())
            yield message_type(**fields)
            return
        yield message_type(**fields)
        chunk = following


def _sorted_walk(root: str) -> Iterable[tuple[str, list[str], list[str]]]:
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        yield directory, dirs, sorted(files)


def _checked_path(info: pb.FileInfo, requested: ArtifactPath) -> tuple[ArtifactInfo, ArtifactPath]:
    """Applies the path grammar to a path the server returned; it must lie under `requested`."""
    path = parse(info.path, allow_root=True, what="path returned by the server")
    if not path.is_relative_to(requested):
        raise FailedPrecondition(
            f"the server returned {info.path!r}, which is not under the requested '{requested}'"
        )
    return ArtifactInfo.from_proto(info), path


def _checked_info(info: pb.FileInfo, requested: ArtifactPath) -> ArtifactInfo:
    return _checked_path(info, requested)[0]


def _identity(info: pb.FileInfo) -> tuple[int, str, int]:
    return info.file_size, info.sha256, info.modified_time.ToNanoseconds()


def _code_name(code: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == code:
            return status.name
    return f"code {code}"


def _error(exc: grpc.RpcError) -> ArtifactError:
    call = exc if isinstance(exc, grpc.Call) else None
    code = call.code() if call is not None else grpc.StatusCode.UNKNOWN
    details = (call.details() if call is not None else None) or str(exc)
    if code == grpc.StatusCode.UNAVAILABLE:
        details = f"artifactd server unavailable: {details}"
    return from_status(code, details)


def _backoff(tries: int) -> None:
    time.sleep(min(8.0, 0.25 * 2**tries) * random.uniform(0.8, 1.2))  # noqa: S311 - jitter
