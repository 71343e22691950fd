"""ArtifactClient: upload, list, download and delete artifacts on an artifactd server.

The method names and semantics follow MLflow's `ArtifactRepository` where they make sense:
`artifact_path` is a directory and an uploaded file keeps its base name; downloads land at
`dst_path/<artifact_path>`. Unlike MLflow, a missing path raises `NotFound`, every transfer is
verified against the server's sha256, and calls that are safe to repeat are retried with backoff
when the server is UNAVAILABLE (downloads resume from the last byte received).

Every artifact method takes `run_id=`: the path is then relative to that run's artifact root (see
`TrackingClient`), and so are the paths returned. A `runs:/<run_id>/<path>` URI says the same.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from artifactd.client.checksums import UploadChecksum, checksum_for
from artifactd.client.direct import (
    DirectDownload,
    DirectSettings,
    DirectUpload,
    UploadRecord,
    file_digest,
)
from artifactd.client.localfiles import Destination, VerifiedFile
from artifactd.client.progress import Progress, progress_bar
from artifactd.client.ranges import RangeReader
from artifactd.client.resumable import ResumableUpload
from artifactd.client.rpc import (
    Connection,
    backoff,
    code_name,
    error,
    retryable,
    status_code,
)
from artifactd.client.settings import ClientSettings
from artifactd.client.stubs import ArtifactStub
from artifactd.client.target import Location, in_run, resolve
from artifactd.protocol import malloc
from artifactd.protocol.errors import (
    ArtifactError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    from_status,
)
from artifactd.protocol.paths import ROOT, ArtifactPath, join, parse
from artifactd.protocol.wire import OutgoingChunk
from artifactd.v1 import artifact_service_pb2 as pb

T = TypeVar("T", bound=Message)
log = logging.getLogger(__name__)

BATCH_FILES = 10_000
PACKED_FILE_MAX = 256 * 1024
"""Files up to this size go several to a LogArtifacts message where the server takes that
(`packed_files`), in messages of about `chunk_size` bytes."""
PACKED_WRITES_IN_FLIGHT = 64


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


class ArtifactClient(Connection):
    """A connection to one artifactd server; use it as a context manager or call `close`."""

    def __init__(
        self,
        target: str | None = None,
        *,
        settings: ClientSettings | None = None,
        strict_env: bool | None = None,
        progress: bool = False,
        overwrite: bool = True,
        direct: DirectSettings | None = None,
    ) -> None:
        super().__init__(target, settings=settings, strict_env=strict_env)
        self.progress = progress
        self.overwrite = overwrite
        self.direct = direct if direct is not None else DirectSettings.from_env()
        self._capabilities: pb.GetCapabilitiesResponse | None = None
        malloc.keep_transfer_buffers()
        self._stub = ArtifactStub(self._channel)

    # -- addressing ------------------------------------------------------------------------

    def _locate(self, location: str | None, run_id: str | None) -> tuple[ArtifactPath, str]:
        """(artifact path, run id or "") of a plain path or URI and an optional `run_id`.

        A URI must name this client's server; a `runs:/` URI and `run_id` must name one run.
        """
        resolved: Location = in_run(resolve(location), run_id)
        if resolved.target is not None and resolved.target != self.target:
            raise InvalidArgument(
                f"{location!r} names server {resolved.target}, but this client is connected "
                f"to {self.target}"
            )
        return resolved.path, resolved.run_id or ""

    # -- calls -----------------------------------------------------------------------------

    def get_capabilities(self) -> pb.GetCapabilitiesResponse:
        return self._unary(self._stub.GetCapabilities, pb.GetCapabilitiesRequest())

    def get_artifact_info(
        self, path: str | None = None, *, run_id: str | None = None
    ) -> ArtifactInfo:
        """Describes a file or directory; raises `errors.NotFound` if it is neither."""
        located, run = self._locate(path, run_id)
        request = pb.GetArtifactRequest(path=str(located), run_id=run)
        return _checked_info(self._unary(self._stub.GetArtifact, request).file, located)

    def iter_artifacts(
        self,
        path: str | None = None,
        recursive: bool = False,
        page_size: int = 0,
        *,
        run_id: str | None = None,
    ) -> Iterator[ArtifactInfo]:
        """Entries under a directory, fetched page by page as they are consumed."""
        base, run = self._locate(path, run_id)
        directory = str(base)
        token = ""
        while True:
            request = pb.ListArtifactsRequest(
                path=directory,
                recursive=recursive,
                page_size=page_size,
                page_token=token,
                run_id=run,
            )
            page = self._unary(self._stub.ListArtifacts, request)
            for info in page.files:
                yield _checked_info(info, base)
            token = page.next_page_token
            if not token:
                return

    def list_artifacts(
        self, path: str | None = None, recursive: bool = False, *, run_id: str | None = None
    ) -> list[ArtifactInfo]:
        """The direct children of a directory (every descendant with `recursive`)."""
        return list(self.iter_artifacts(path, recursive, run_id=run_id))

    def delete_artifacts(
        self, artifact_path: str | None = None, *, run_id: str | None = None
    ) -> bool:
        """Deletes a file or directory tree; returns whether anything was there.

        Within a run, an empty `artifact_path` (or `runs:/<run_id>`) deletes all of the run's
        artifacts, as in MLflow; the server's artifact root itself cannot be deleted.
        """
        located, run = self._locate(artifact_path, run_id)
        if located.is_root and not run:
            raise InvalidArgument(
                "an artifact path is required: the artifact root itself cannot be deleted"
            )
        request = pb.DeleteArtifactsRequest(path=str(located), run_id=run)
        return self._unary(self._stub.DeleteArtifacts, request).existed

    # -- uploads ---------------------------------------------------------------------------

    def log_artifact(
        self,
        local_file: str | os.PathLike[str],
        artifact_path: str | None = None,
        *,
        run_id: str | None = None,
        file_name: str | None = None,
    ) -> ArtifactInfo:
        """Uploads one file to `<artifact_path>/<its base name>` (or `<artifact_path>/<file_name>`);
        atomic and verified."""
        local = os.fspath(local_file)
        base, run = self._locate(artifact_path, run_id)
        destination = join(base, file_name or os.path.basename(local))
        stat = os.stat(local)
        if (
            self.direct.enabled
            and stat.st_size >= self.direct.minimum_size
            and self._may_take_direct_uploads()
        ):
            with self._bar(stat.st_size, local) as bar:
                identity = self._identity(local, run, destination, stat)
                direct = DirectUpload(
                    self._stub,
                    self.direct,
                    self.settings.rpc_timeout,
                    bar.update,
                    identity,
                )
                info = direct.run(
                    local, str(destination), run, self._policy(), lambda: file_digest(local)
                )
            if info is not None:
                return _checked_info(info, destination)
        if stat.st_size >= self.direct.resumable_minimum_size:
            info = self._log_resumably(local, destination, run, stat)
            if info is not None:
                return _checked_info(info, destination)
        for tries in range(self.settings.max_retries + 1):
            try:
                return self._log_once(local, destination, run)
            except _Broken as broken:
                if tries == self.settings.max_retries:
                    raise broken.failure from None
                log.info("upload of '%s' broken (%s); sending it again", destination,
                         broken.failure.message)  # fmt: skip
                backoff(tries, broken.exc)
        raise AssertionError("unreachable")

    def _log_once(self, local: str, destination: ArtifactPath, run: str) -> ArtifactInfo:
        """One LogArtifact stream of a local file. A stream broken by an unreachable server
        (UNAVAILABLE: a replica killed, a connection reset) raises `_Broken` when the file may
        be sent again: the stream stopped before its finish message, so the server published
        nothing (a half-sent stream never publishes), or it stopped after and the file did not
        land (`_landed`). Sending it again is then the same as sending it once, even with
        FAIL_IF_EXISTS, and a balanced channel sends it to another replica."""
        with open(local, "rb") as fh, self._bar(os.fstat(fh.fileno()).st_size, local) as bar:
            size = os.fstat(fh.fileno()).st_size
            header = self._header(destination, size, run)
            finished = _FinishSent(
                _file_messages(
                    fh, header, pb.LogArtifactRequest, self.settings.chunk_size, bar,
                    self._checksum(size),
                )
            )  # fmt: skip
            try:
                response = self._stub.LogArtifact(finished, timeout=self.settings.transfer_timeout)
            except grpc.RpcError as exc:
                failure = error(exc)
                if not retryable(exc):
                    raise failure from None
                if not finished.sent:
                    raise _Broken(failure, exc) from None
                landed = self._landed(local, size, destination, run)
                if landed is None:
                    raise _Broken(failure, exc) from None
                return landed
        return _checked_info(response.file, destination)

    def log_stream(
        self,
        stream: Readable,
        artifact_path: str,
        *,
        run_id: str | None = None,
        overwrite: bool | None = None,
    ) -> ArtifactInfo:
        """Uploads what `stream.read()` yields until end of file to the file `artifact_path`,
        with no local copy (a request body being proxied, bytes made in memory).

        The size is not known in advance: the server writes under a temporary name and publishes
        atomically once the stream ends, with the sha256 (or CRC32C) computed while reading; a
        stream that breaks, or a `read` that raises, stores nothing and the error is raised here.
        Not retried: a stream cannot be replayed. `overwrite` (default: the client's) False
        refuses to replace a file already there (AlreadyExists), atomically on the server.
        """
        destination, run = self._locate(artifact_path, run_id)
        if destination.is_root:
            raise InvalidArgument("log_stream needs a file path, not the artifact root")
        policy = self._policy(overwrite)
        header = pb.UploadHeader(path=str(destination), overwrite=policy, run_id=run)
        source = _ReadErrors(stream)
        messages = _file_messages(
            source,
            header,
            pb.LogArtifactRequest,
            self.settings.chunk_size,
            None,
            self._checksum(None),
        )
        try:
            response = self._stub.LogArtifact(messages, timeout=self.settings.transfer_timeout)
        except grpc.RpcError as exc:
            if source.failure is not None:  # gRPC cancels the call; say why
                raise source.failure from None
            raise error(exc) from None
        return _checked_info(response.file, destination)

    def _landed(
        self, local: str, size: int, destination: ArtifactPath, run: str
    ) -> ArtifactInfo | None:
        """After UNAVAILABLE once the whole file was sent, whether it was published anyway (the
        server may have crashed between publishing and answering): the stored size and sha256
        against the local file's. The artifact, or None when it did not land (the caller then
        reports the failure; an unreachable server is reported as such)."""
        request = pb.GetArtifactRequest(path=str(destination), run_id=run)
        try:
            stored = self._unary(self._stub.GetArtifact, request).file  # retried while UNAVAILABLE
        except NotFound:
            return None
        if stored.is_dir or stored.file_size != size or stored.sha256 != file_digest(local):
            return None
        log.info("'%s' was published although the server's answer was lost", destination)
        return _checked_info(stored, destination)

    def log_artifacts(
        self,
        local_dir: str | os.PathLike[str],
        artifact_path: str | None = None,
        *,
        run_id: str | None = None,
    ) -> list[ArtifactInfo]:
        """Uploads a directory tree under `artifact_path`, many files per stream.

        Every file is published atomically; if some fail, the others are still stored and one
        error lists the failures.
        """
        root = os.fspath(local_dir)
        if not os.path.isdir(root):
            raise InvalidArgument(f"{root!r} is not a directory")
        base, run = self._locate(artifact_path, run_id)
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
        codes: set[int] = set()
        capabilities = self._server_capabilities()  # not from gRPC's sending thread
        new_checksum = checksum_for(capabilities)
        pack_up_to = PACKED_FILE_MAX if capabilities.packed_files else -1
        # as many files per stream as the server takes (`--max-batch-files`; 0: not advertised)
        per_stream = min(BATCH_FILES, capabilities.max_batch_files or BATCH_FILES)
        with self._bar(total, root) as bar:
            for start in range(0, len(files), per_stream):
                batch = files[start : start + per_stream]
                results = self._log_batch(batch, run, bar, new_checksum, pack_up_to)
                for result, landed in results:
                    if landed is not None:
                        stored.append(landed)
                    elif result.code == 0:
                        stored.append(_checked_info(result.file, base))
                    else:
                        failures.append(f"{result.path}: {code_name(result.code)} {result.message}")
                        codes.add(result.code)
        if failures:
            shown = "\n  ".join(failures[:20])
            more = f"\n  ... and {len(failures) - 20} more" if len(failures) > 20 else ""
            message = f"{len(failures)} of {len(files)} files were not stored:\n  {shown}{more}"
            # one cause (say, out of space) raises its own class, which callers can catch
            common = status_code(codes.pop()) if len(codes) == 1 else None
            raise from_status(common, message) if common else ArtifactError(message)
        return stored

    def _log_batch(
        self,
        batch: list[tuple[str, ArtifactPath]],
        run: str,
        bar: Progress,
        new_checksum: Callable[[int | None], UploadChecksum],
        pack_up_to: int,
    ) -> list[tuple[pb.LogArtifactsResult, ArtifactInfo | None]]:
        """One LogArtifacts stream of local files, sent again whole (with backoff, at most
        `max_retries` times) when it breaks on an unreachable server: files it had published
        stay and are published again with the same bytes, the file cut off mid-stream was never
        published. With FAIL_IF_EXISTS a file the broken attempt had published comes back
        ALREADY_EXISTS; it counts as stored when the server holds exactly the local bytes.
        (result, the stored file when it is such a one)."""
        for tries in range(self.settings.max_retries + 1):
            try:
                response = self._stub.LogArtifacts(
                    self._batch_messages(batch, run, bar, new_checksum, pack_up_to),
                    timeout=self.settings.transfer_timeout,
                )
                break
            except grpc.RpcError as exc:
                if not retryable(exc) or tries == self.settings.max_retries:
                    raise error(exc) from None
                log.info("directory upload broken (%s); sending it again", error(exc).message)
                backoff(tries, exc)
        local_of = {str(path): local for local, path in batch}
        results: list[tuple[pb.LogArtifactsResult, ArtifactInfo | None]] = []
        for result in response.results:
            landed = None
            if tries and result.code == grpc.StatusCode.ALREADY_EXISTS.value[0]:
                local = local_of.get(result.path)
                if local is not None:
                    path = parse(result.path, what="path returned by the server")
                    landed = self._landed(local, os.path.getsize(local), path, run)
            results.append((result, landed))
        return results

    def _identity(self, local: str, run: str, destination: ArtifactPath, st: os.stat_result) -> str:
        return "|".join(
            (self.target, run, str(destination), os.path.abspath(local), str(st.st_size),
             str(st.st_mtime_ns))
        )  # fmt: skip

    def _log_resumably(
        self, local: str, destination: ArtifactPath, run: str, st: os.stat_result
    ) -> pb.FileInfo | None:
        """A large file through the server, continued after a broken stream (None: the storage
        takes direct uploads, which were switched off)."""
        record = UploadRecord(self.direct.state_dir, self._identity(local, run, destination, st),
                              "resumable")  # fmt: skip
        with open(local, "rb") as fh, self._bar(st.st_size, local) as bar:

            def messages(
                header: pb.UploadHeader, offset: int
            ) -> Iterator[OutgoingChunk[pb.LogArtifactRequest]]:
                prefix = self._checksum(st.st_size)  # the finish checksum covers the whole file
                fh.seek(0)
                remaining = offset
                while remaining > 0 and (block := fh.read(min(1 << 20, remaining))):
                    prefix.update(block)
                    remaining -= len(block)
                return _file_messages(
                    fh, header, pb.LogArtifactRequest, self.settings.chunk_size, bar, prefix
                )  # fmt: skip

            def rewind(offset: int) -> None:
                bar.n = offset
                bar.refresh()

            upload = ResumableUpload(
                self._stub, record, rpc_timeout=self.settings.rpc_timeout,
                transfer_timeout=self.settings.transfer_timeout,
                retries=self.settings.max_retries, rewind=rewind,
            )  # fmt: skip
            return upload.run(local, str(destination), run, self._policy(), messages)

    def _server_capabilities(self) -> pb.GetCapabilitiesResponse:
        """Asked once per client, before its first upload, and not retried: an upload fails at
        once when the server is away."""
        if self._capabilities is None:
            request = pb.GetCapabilitiesRequest()
            self._capabilities = self._unary_once(self._stub.GetCapabilities, request)
        return self._capabilities

    def _may_take_direct_uploads(self) -> bool:
        """Whether the server's default storage takes direct uploads.

        A hint that spares reading a large file twice (its digest, then its bytes) where direct
        uploads cannot happen; the server decides per upload (a run may live in another root).
        """
        return self._server_capabilities().supports_multipart_upload

    def _checksum(self, size: int | None) -> UploadChecksum:
        """A new checksum of the kind the server verifies best for `size` bytes (see
        `checksums`; None: not known in advance)."""
        return checksum_for(self._server_capabilities())(size)

    def _policy(self, overwrite: bool | None = None) -> pb.OverwritePolicy.ValueType:
        if self.overwrite if overwrite is None else overwrite:
            return pb.OVERWRITE_POLICY_OVERWRITE
        return pb.OVERWRITE_POLICY_FAIL_IF_EXISTS

    def _header(self, path: ArtifactPath, size: int, run_id: str) -> pb.UploadHeader:
        return pb.UploadHeader(path=str(path), size=size, overwrite=self._policy(), run_id=run_id)

    def _batch_messages(
        self,
        batch: list[tuple[str, ArtifactPath]],
        run_id: str,
        bar: Progress | None,
        new_checksum: Callable[[int | None], UploadChecksum],
        pack_up_to: int,
    ) -> Iterator[OutgoingChunk[pb.LogArtifactsRequest]]:
        """The stream's messages: files up to `pack_up_to` bytes whole, several to a message
        (`files`; -1: the server takes none), larger ones in chunks."""
        pack: list[pb.PackedUpload] = []
        packed_bytes = 0
        for local, path in batch:
            with open(local, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                header = self._header(path, size, run_id)
                if size <= pack_up_to:
                    # one byte more than declared: a file that grew is refused, not cut short
                    data = fh.read(size + 1)
                    checksum = new_checksum(size)
                    checksum.update(data)
                    pack.append(pb.PackedUpload(header=header, data=data, finish=checksum.finish()))
                    packed_bytes += len(data)
                    if bar is not None:
                        bar.update(len(data))
                    if packed_bytes >= self.settings.chunk_size:
                        yield OutgoingChunk(pb.LogArtifactsRequest(files=pack), b"")
                        pack, packed_bytes = [], 0
                    continue
                if pack:
                    yield OutgoingChunk(pb.LogArtifactsRequest(files=pack), b"")
                    pack, packed_bytes = [], 0
                yield from _file_messages(
                    fh, header, pb.LogArtifactsRequest, self.settings.chunk_size, bar,
                    new_checksum(size),
                )  # fmt: skip
        if pack:
            yield OutgoingChunk(pb.LogArtifactsRequest(files=pack), b"")

    # -- downloads -------------------------------------------------------------------------

    def download_artifacts(
        self,
        artifact_path: str | None = None,
        dst_path: str | os.PathLike[str] | None = None,
        *,
        run_id: str | None = None,
        relative_to: str | None = None,
    ) -> str:
        """Downloads a file or directory to `dst_path/<artifact_path>`; returns that local path.

        `dst_path` defaults to a new temporary directory. Each file is checked against the
        server's size and sha256 before it appears under its name. With a run, `artifact_path`
        is relative to the run's artifact root, and so is where it lands under `dst_path`.
        `relative_to`, a directory containing `artifact_path` (in the same run), shortens where
        it lands to `dst_path/<artifact_path below relative_to>`: the layout of a repository
        rooted below the server's root, such as the MLflow plugin's.
        """
        path, run = self._locate(artifact_path, run_id)
        base = ROOT if relative_to is None else self._locate(relative_to, run or None)[0]
        if not path.is_relative_to(base):
            raise InvalidArgument(f"'{path}' is not under relative_to '{base}'")
        local = path.parts[len(base.parts) :]
        dst = os.fspath(dst_path) if dst_path is not None else tempfile.mkdtemp(prefix="artifactd-")
        destination = _Rebased(dst, len(base.parts))
        info = self.get_artifact_info(str(path), run_id=run or None)
        if info.is_dir:
            self._retrying(lambda: self._download_tree(path, run, destination))
        elif not local:
            raise InvalidArgument(f"'{path}' is a file: relative_to must be a directory above it")
        elif not self._download_directly(path, run, destination.file(path.parts), info):
            self._download_file(path, run, destination.file(path.parts))
        return os.path.join(dst, *local)

    def download_file(
        self,
        artifact_path: str,
        local_path: str | os.PathLike[str],
        *,
        run_id: str | None = None,
    ) -> str:
        """Downloads one file to exactly `local_path` (its directories created, a file there
        replaced), checked against the server's size and sha256 as every download; returns the
        absolute local path. A directory is InvalidArgument: use `download_artifacts`."""
        path, run = self._locate(artifact_path, run_id)
        info = self.get_artifact_info(str(path), run_id=run or None)
        if info.is_dir:
            raise InvalidArgument(f"'{path}' is a directory, not a file")
        target = os.path.abspath(os.fspath(local_path))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not self._download_directly(path, run, target, info):
            self._download_file(path, run, target)
        return target

    def open_range(
        self,
        artifact_path: str,
        offset: int = 0,
        length: int | None = None,
        *,
        run_id: str | None = None,
    ) -> RangeReader:
        """Bytes `[offset, offset + length)` of a file (to its end when `length` is None) as a
        stream the server reads only that range for: random access without downloading the
        file (see `RangeReader`). Nothing is sent before the first `read`."""
        path, run = self._locate(artifact_path, run_id)
        if path.is_root:
            raise InvalidArgument("a range needs a file path, not the artifact root")
        return RangeReader(self._stub, self.settings, path, run, offset, length)

    def _download_directly(
        self, path: ArtifactPath, run_id: str, target: str, info: ArtifactInfo
    ) -> bool:
        """Large files come straight from storage where it can presign (False: it cannot)."""
        settings = self.direct
        if not settings.download_enabled or info.file_size < settings.download_minimum_size:
            return False
        with self._bar(info.file_size, str(path)) as bar:
            direct = DirectDownload(self._stub, settings, self.settings.rpc_timeout, bar.update)
            return direct.run(str(path), run_id, target)

    def _download_file(self, path: ArtifactPath, run_id: str, target: str) -> None:
        download = _FileDownload(path, target, self._bar, self.settings.direct_io)
        try:
            for tries in range(self.settings.max_retries + 1):
                request = pb.DownloadArtifactRequest(
                    path=str(path), offset=download.offset, run_id=run_id
                )
                try:
                    stream = self._stub.DownloadArtifact(
                        request, timeout=self.settings.transfer_timeout
                    )
                    for message in stream:
                        download.receive(message)
                    break
                except grpc.RpcError as exc:
                    if not retryable(exc) or tries == self.settings.max_retries:
                        raise error(exc) from None
                    backoff(tries, exc)  # then resume from the last byte received
            download.commit()
        finally:
            download.close()

    def _download_tree(self, root: ArtifactPath, run_id: str, destination: Destination) -> None:
        # The directory itself exists afterwards even when it holds no file (its last file was
        # deleted): a caller gets back an existing, empty directory, as from MLflow's stores.
        destination.directory(root.parts)
        with self._bar(None, str(root) or "artifacts", unit="file") as bar:
            tree = _TreeDownload(root, destination, bar, self.settings.direct_io)
            try:
                stream = self._stub.DownloadArtifacts(
                    pb.DownloadArtifactsRequest(
                        path=str(root), run_id=run_id, accept_packed_files=True
                    ),
                    timeout=self.settings.transfer_timeout,
                )
                for message in stream:
                    tree.receive(message)
                tree.finish()
            finally:
                tree.close()

    # -- progress --------------------------------------------------------------------------

    def _bar(self, total: int | None, label: str, unit: str = "B") -> Progress:
        return progress_bar(self.progress, total, label, unit)


class _Rebased(Destination):
    """A download directory for server paths below a base of `skip` segments, which it drops."""

    def __init__(self, dst: str, skip: int) -> None:
        super().__init__(dst)
        self._skip = skip

    def directory(self, parts: tuple[str, ...]) -> str:
        return super().directory(parts[self._skip :])


class _FileDownload:
    """One file arriving over one or more (resumed) DownloadArtifact streams."""

    def __init__(
        self,
        path: ArtifactPath,
        target: str,
        bar: Callable[[int, str], Progress],
        direct_io: bool,
    ) -> None:
        self.path = path
        self.target = target
        self._direct_io = direct_io
        self._make_bar = bar
        self._first: pb.FileInfo | None = None
        self._out: VerifiedFile | None = None
        self._bar: Progress | None = None

    @property
    def offset(self) -> int:
        return self._out.received if self._out is not None else 0

    def receive(self, message: pb.DownloadArtifactResponse) -> None:
        if message.HasField("info"):
            self._on_info(message.info)
        if self._out is None:
            raise DataLoss(f"the server sent data for '{self.path}' before its info")
        data = message.data  # a view of the received buffer (artifactd.protocol.wire.Chunk)
        if data:
            self._out.write(data)
            if self._bar is not None:
                self._bar.update(len(data))

    def _on_info(self, info: pb.FileInfo) -> None:
        if self._first is None:
            checked = _checked_info(info, self.path)
            self._first = info
            self._out = VerifiedFile(
                self.target, checked.file_size, checked.sha256, direct_io=self._direct_io
            )
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
    """A DownloadArtifacts stream being written out, each file verified before it appears.

    Whole small files (packed) are written by a writer thread while the next messages arrive:
    their open, write and rename release the GIL, and one after another they were a third of
    the client's time for 1,000 files of 16 KiB. At most `PACKED_WRITES_IN_FLIGHT` wait, so
    at most that many packed files' bytes are held (each is at most 256 KiB).
    """

    def __init__(
        self, root: ArtifactPath, destination: Destination, bar: Progress, direct_io: bool
    ) -> None:
        self.root = root
        self.direct_io = direct_io
        self.destination = destination
        self.bar = bar
        self.current: VerifiedFile | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._writes: deque[Future[None]] = deque()

    def receive(self, message: pb.DownloadArtifactsResponse) -> None:
        for packed in message.files:  # whole small files (accept_packed_files)
            self.finish_file()
            info, path = _checked_path(packed.file, self.root)
            if info.is_dir:
                raise DataLoss(f"the server sent directory {info.path!r} as a packed file")
            self._write_whole(self.destination.file(path.parts), info, packed.data)
            self.bar.update(1)
        if message.HasField("file"):
            self._start(message.file)
        self._write(message.data)

    def _write_whole(self, target: str, info: ArtifactInfo, data: bytes) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="artifactd-download-writer")
        self._writes.append(self._writer.submit(_write_file, target, info, data))
        while len(self._writes) > PACKED_WRITES_IN_FLIGHT:
            self._writes.popleft().result()  # raises what failed there (DataLoss, OSError...)

    def _start(self, file: pb.FileInfo) -> None:
        self.finish_file()
        info, path = _checked_path(file, self.root)
        if info.is_dir:
            self.destination.directory(path.parts)
        else:
            target = self.destination.file(path.parts)
            self.current = VerifiedFile(
                target, info.file_size, info.sha256, direct_io=self.direct_io
            )
            self.bar.update(1)

    def _write(self, data: bytes | memoryview) -> None:
        """`data`: a view of the received buffer (artifactd.protocol.wire.Chunk)."""
        if data:
            if self.current is None:
                raise DataLoss("the server sent file data without naming the file")
            self.current.write(data)

    def finish_file(self) -> None:
        if self.current is not None:
            current, self.current = self.current, None
            current.commit()

    def finish(self) -> None:
        """The last file published and every packed file written: the tree is complete."""
        self.finish_file()
        while self._writes:
            self._writes.popleft().result()

    def close(self) -> None:
        """However the stream ended: the file in progress goes, and the writer thread finishes
        what it has (each packed file is published whole or not at all) before this returns."""
        if self.current is not None:
            self.current.abort()
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writes.clear()


def _write_file(target: str, info: ArtifactInfo, data: bytes) -> None:
    """One whole packed file, verified against its info, published under its name."""
    out = VerifiedFile(target, info.file_size, info.sha256, direct_io=False)
    try:
        out.write(data)
    except BaseException:
        out.abort()
        raise
    out.commit()


class _Broken(Exception):
    """An upload stream the server never answered, which is safe to send again."""

    def __init__(self, failure: ArtifactError, exc: grpc.RpcError) -> None:
        super().__init__(failure.message)
        self.failure = failure
        self.exc = exc


class _FinishSent(Iterator[OutgoingChunk[T]]):
    """An upload's request messages, noting when the one with the finish was taken to send."""

    def __init__(self, messages: Iterator[OutgoingChunk[T]]) -> None:
        self._messages = messages
        self.sent = False

    def __next__(self) -> OutgoingChunk[T]:
        chunk = next(self._messages)
        if chunk.message.HasField("finish"):
            self.sent = True
        return chunk


class Readable(Protocol):
    """What `log_stream` reads from: `read(size)` returns up to `size` bytes, b"" at the end."""

    def read(self, size: int, /) -> bytes: ...


class _ReadErrors:
    """A stream whose `read` failure is kept: gRPC turns an exception in a request iterator
    into CANCELLED, and the caller should see the real cause."""

    def __init__(self, stream: Readable) -> None:
        self._stream = stream
        self.failure: BaseException | None = None

    def read(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except BaseException as exc:
            self.failure = exc
            raise


def _file_messages(
    fh: BinaryIO | _ReadErrors,
    header: pb.UploadHeader,
    message_type: type[T],
    chunk_size: int,
    bar: Progress | None,
    checksum: UploadChecksum,
) -> Iterator[OutgoingChunk[T]]:
    """header+data ... data+finish messages for one open file, checksummed as it is read (on
    top of what `checksum` already covers: a resumed file's prefix).

    The first chunk travels with the header and the last with the finish (a small file is one
    message). The declared size is the file's size when opened: a file that grows or shrinks
    while being sent is refused by the server rather than stored torn.
    """
    chunk = fh.read(chunk_size)
    first = True
    while True:
        following = fh.read(chunk_size) if chunk else b""
        checksum.update(chunk)
        if bar is not None:
            bar.update(len(chunk))
        fields: dict[str, object] = {}
        if first:
            fields["header"] = header
            first = False
        if not following:
            fields["finish"] = checksum.finish()
            yield OutgoingChunk(message_type(**fields), chunk)
            return
        yield OutgoingChunk(message_type(**fields), chunk)
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
