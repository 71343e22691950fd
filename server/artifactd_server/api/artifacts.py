"""ArtifactService: translates between protobuf messages and the storage adapter.

Every request path is parsed by the one grammar (`paths.parse`) before any storage
call; the adapter only ever sees `ArtifactPath`s. No storage logic lives here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc

from artifactd.protocol.errors import ArtifactError, InvalidArgument, NotFound, OutOfRange, excerpt
from artifactd.protocol.paths import MAX_PATH_BYTES, ArtifactPath, InvalidPath, parse
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd_server.api import paging
from artifactd_server.api.convert import file_info
from artifactd_server.api.direct import DirectTransferMethods, caller
from artifactd_server.api.status import InFlight, translate_errors
from artifactd_server.domain import limits
from artifactd_server.domain.batches import BatchPublisher, Outcome
from artifactd_server.domain.limits import check_path_length
from artifactd_server.domain.multipart import DirectUploads
from artifactd_server.domain.resumable import Continuation, ResumableUploads
from artifactd_server.domain.scopes import Scope, Scopes, WriteScopes
from artifactd_server.domain.streamed import StreamedUploads
from artifactd_server.domain.uploads import (
    Declared,
    UploadMessage,
    UploadSpec,
    UploadStream,
    check_declared_size,
    parse_digest,
)
from artifactd_server.storage.base import Entry

log = logging.getLogger(__name__)


def _header_reader(
    scopes: WriteScopes,
    resumable: ResumableUploads,
    streamed: StreamedUploads,
    owner: str,
    max_path_length: int,
) -> Callable[[UploadMessage], tuple[str, Callable[[], UploadSpec]]]:
    """Reads a header message into the raw path (for error reports) and an `UploadSpec` parser."""

    def read(message: UploadMessage) -> tuple[str, Callable[[], UploadSpec]]:
        header: pb.UploadHeader = message.header  # type: ignore[attr-defined]

        def spec() -> UploadSpec:
            if header.upload_id:
                continuation = Continuation(
                    upload_id=header.upload_id,
                    offset=header.offset,
                    path=header.path,
                    size=header.size if header.HasField("size") else None,
                    sha256=header.sha256,
                    run_id=header.run_id,
                )
                return resumable.spec(continuation, owner)
            if header.offset:
                raise InvalidArgument(
                    "offset is only for continuing an upload (upload_id)", field="offset"
                )
            check_path_length(header.path, max_path_length)
            path = parse(header.path)
            sha256 = parse_digest(header.sha256, "header sha256")
            scope = scopes.for_write(header.run_id, path)
            size = header.size if header.HasField("size") else None
            if size is not None:
                check_declared_size(size, scope, path)
            spec = UploadSpec(
                path=path,
                size=size,
                sha256=sha256,
                overwrite=header.overwrite != pb.OVERWRITE_POLICY_FAIL_IF_EXISTS,
                scope=scope,
            )
            return dataclasses.replace(spec, tracking=streamed.tracking(spec, owner))

        return header.path, spec

    return read


def _declared_in(message: UploadMessage) -> Declared:
    finish: pb.UploadFinish = message.finish  # type: ignore[attr-defined]
    return Declared(
        sha256=parse_digest(finish.sha256, "finish sha256"),
        crc32c=finish.crc32c if finish.HasField("crc32c") else None,
    )


class ArtifactServicer(DirectTransferMethods, pb_grpc.ArtifactServiceServicer):
    def __init__(
        self,
        scopes: Scopes,
        committer: ThreadPoolExecutor,
        direct: DirectUploads,
        resumable: ResumableUploads,
        streamed: StreamedUploads,
        request_limits: limits.RequestLimits | None = None,
    ) -> None:
        self._limits = request_limits or limits.RequestLimits()
        self._scopes = scopes
        self._direct = direct
        self._resumable = resumable
        self._streamed = streamed
        self._storage = scopes.default.storage
        self._committer = committer
        self.in_flight = InFlight()

    def _stream(
        self,
        max_files: int,
        context: grpc.ServicerContext,
        before_open: Callable[[UploadSpec], None] | None = None,
    ) -> UploadStream:
        """Reads LogArtifact(s) requests, which arrive as `wire.Chunk`s (their data a
        view of the received buffer: `request_decoding`), typed here as the messages they wrap."""
        reader = _header_reader(
            self._scopes.writer(),
            self._resumable,
            self._streamed,
            caller(context),
            self._limits.max_path_length,
        )
        return UploadStream(reader, _declared_in, max_files, before_open)

    @translate_errors
    def LogArtifact(  # noqa: N802 - gRPC method names
        self, request_iterator: Iterator[pb.LogArtifactRequest], context: grpc.ServicerContext
    ) -> pb.LogArtifactResponse:
        # Every way out without a commit (a message after the finish, a cancelled client, an
        # expired deadline, a storage error) must discard the sealed file: a sealed upload holds
        # a descriptor and a temporary file, and one malformed stream per call would otherwise
        # exhaust the server's descriptors.
        with contextlib.closing(self._stream(1, context).files(request_iterator)) as events:
            event = next(events, None)
            if event is None:
                raise InvalidArgument("the stream carried no message; send a header first")
            try:
                extra = next(events, None)
                if extra is not None:
                    extra.discard()
                    raise InvalidArgument(
                        f"LogArtifact carries one file; '{excerpt(extra.path)}' followed "
                        "(use LogArtifacts for several)"
                    )
                if event.error is not None:
                    raise event.error
                assert event.sealed is not None and event.scope is not None
                entry = event.sealed.commit(True)  # a failed commit aborts the upload
            except BaseException:
                event.discard()
                raise
        return pb.LogArtifactResponse(file=file_info(event.scope.relative(entry)))

    @translate_errors
    def LogArtifacts(  # noqa: N802
        self, request_iterator: Iterator[pb.LogArtifactsRequest], context: grpc.ServicerContext
    ) -> pb.LogArtifactsResponse:
        # Files are published in groups, durably, in arrival order: see domain.batches.
        publisher = BatchPublisher(self._committer)
        stream = self._stream(self._limits.max_batch_files, context, publisher.before_open)
        try:
            with contextlib.closing(stream.files(request_iterator)) as events:
                for event in events:
                    publisher.add(event)
        finally:
            publisher.finish()
        results = [_result(outcome) for outcome in publisher.outcomes]
        return pb.LogArtifactsResponse(results=results)

    @translate_errors
    def DownloadArtifact(  # noqa: N802
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactResponse]:
        path = parse(request.path)
        if request.offset < 0 or request.limit < 0:
            raise InvalidArgument("offset and limit must not be negative")
        scope = self._scopes.for_read(request.run_id)
        with scope.storage.open_file(scope.full(path)) as reader:
            size = reader.entry.size
            if request.offset > size:
                raise OutOfRange(
                    f"offset {request.offset} is past the end of '{path}' ({size} bytes)"
                )
            chunks = reader.chunks(request.offset, request.limit, limits.CHUNK_SIZE)
            info = file_info(scope.relative(reader.entry))
            yield pb.DownloadArtifactResponse(info=info, data=next(chunks, b""))
            for chunk in chunks:
                yield pb.DownloadArtifactResponse(data=chunk)

    @translate_errors
    def DownloadArtifacts(  # noqa: N802
        self, request: pb.DownloadArtifactsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactsResponse]:
        scope = self._scopes.for_read(request.run_id)
        root = parse(request.path, allow_root=True)
        storage = scope.storage
        # Small files go several to a message when the client reads them so: one message per
        # 16 KiB file cost both sides more CPU than the file's bytes (gRPC's per-message
        # hand-offs between threads).
        pack = _Pack() if request.accept_packed_files else None
        for entry in _tree(scope, root, recursive=True):
            if entry.is_dir:
                if pack is not None:
                    yield from pack.flush()
                yield pb.DownloadArtifactsResponse(file=file_info(scope.relative(entry)))
                continue
            try:
                reader = storage.open_file(entry.path)
            except ArtifactError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    continue  # deleted since it was listed: not part of the tree any more
                raise
            with reader:
                info = file_info(scope.relative(reader.entry))
                if pack is not None and reader.entry.size <= limits.PACKED_FILE_MAX:
                    pack.add(info, b"".join(reader.chunks(0, 0, limits.CHUNK_SIZE)))
                    if pack.full:
                        yield from pack.flush()
                    continue
                if pack is not None:
                    yield from pack.flush()
                chunks = reader.chunks(0, 0, limits.CHUNK_SIZE)
                yield pb.DownloadArtifactsResponse(file=info, data=next(chunks, b""))
                for chunk in chunks:
                    yield pb.DownloadArtifactsResponse(data=chunk)
        if pack is not None:
            yield from pack.flush()

    @translate_errors
    def ListArtifacts(  # noqa: N802
        self, request: pb.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> pb.ListArtifactsResponse:
        scope = self._scopes.for_read(request.run_id)
        directory = parse(request.path, allow_root=True)
        if request.page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, got {request.page_size}")
        page_size = min(request.page_size or limits.DEFAULT_PAGE_SIZE, limits.MAX_PAGE_SIZE)
        listing = scope.full(directory)
        after = (
            paging.decode(request.page_token, listing, request.recursive)
            if request.page_token
            else None
        )
        entries = _tree(scope, directory, recursive=request.recursive, after=after)
        page = list(itertools.islice(entries, page_size + 1))
        token = ""
        if len(page) > page_size:
            page = page[:page_size]
            token = paging.encode(listing, request.recursive, page[-1].path)
        files = [file_info(scope.relative(e)) for e in page]
        return pb.ListArtifactsResponse(files=files, next_page_token=token)

    @translate_errors
    def GetArtifact(  # noqa: N802
        self, request: pb.GetArtifactRequest, context: grpc.ServicerContext
    ) -> pb.GetArtifactResponse:
        scope = self._scopes.for_read(request.run_id)
        entry = scope.storage.stat(scope.full(parse(request.path, allow_root=True)))
        return pb.GetArtifactResponse(file=file_info(scope.relative(entry)))

    @translate_errors
    def DeleteArtifacts(  # noqa: N802
        self, request: pb.DeleteArtifactsRequest, context: grpc.ServicerContext
    ) -> pb.DeleteArtifactsResponse:
        path = parse(request.path, allow_root=True)
        if path.is_root and not request.run_id:  # a run's whole artifact root may go
            raise InvalidArgument(
                "path is empty, which names the artifact root; the root itself cannot be "
                "deleted: name a file or directory under it",
                field="path",
            )
        scope = self._scopes.for_delete(request.run_id, path)
        existed = scope.storage.delete(scope.full(path))
        log.info("deleted %s (run %s, existed: %s)", path, scope.run_id or "-", existed)
        return pb.DeleteArtifactsResponse(existed=existed)

    @translate_errors
    def GetCapabilities(  # noqa: N802
        self, request: pb.GetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.GetCapabilitiesResponse:
        caps = self._storage.capabilities
        return pb.GetCapabilitiesResponse(
            chunk_size=limits.CHUNK_SIZE,
            max_message_size=self._limits.max_message_size,
            digest_function=limits.DIGEST_FUNCTION,
            max_batch_files=self._limits.max_batch_files,
            default_page_size=limits.DEFAULT_PAGE_SIZE,
            max_page_size=limits.MAX_PAGE_SIZE,
            max_path_length=self._limits.max_path_length,
            backend=self._storage.name,
            supports_range_reads=caps.range_reads,
            supports_multipart_upload=caps.multipart_upload,
            supports_presigned_urls=caps.presigned_urls,
            upload_checksums=limits.UPLOAD_CHECKSUMS,
            max_artifact_size=limits.MAX_ARTIFACT_SIZE,
            packed_files=True,
        )


class _Pack:
    """Whole small files of a DownloadArtifacts stream waiting to go out in one message."""

    def __init__(self) -> None:
        self._files: list[pb.PackedDownload] = []
        self._bytes = 0

    def add(self, info: pb.FileInfo, data: bytes) -> None:
        self._files.append(pb.PackedDownload(file=info, data=data))
        self._bytes += len(data)

    @property
    def full(self) -> bool:
        return self._bytes >= limits.CHUNK_SIZE or len(self._files) >= limits.PACKED_MAX_FILES

    def flush(self) -> Iterator[pb.DownloadArtifactsResponse]:
        if self._files:
            files, self._files, self._bytes = self._files, [], 0
            yield pb.DownloadArtifactsResponse(files=files)


def _tree(
    scope: Scope, directory: ArtifactPath, *, recursive: bool, after: ArtifactPath | None = None
) -> Iterator[Entry]:
    """Entries below `directory`; a run with nothing logged yet has an empty root, not none."""
    try:
        yield from scope.storage.iter_tree(scope.full(directory), recursive=recursive, after=after)
    except NotFound:
        if scope.run_id and directory.is_root:
            return
        raise


def _result(outcome: Outcome) -> pb.LogArtifactsResult:
    """The client's result for one file of a LogArtifacts stream."""
    path, error = outcome.path, outcome.error
    if error is not None:
        if isinstance(error, InvalidPath) and len(path) > MAX_PATH_BYTES:
            path = excerpt(path)  # refused for its length: quote its start, not megabytes
        return _failed(path, error.code, error.message)
    assert outcome.entry is not None and outcome.scope is not None
    return pb.LogArtifactsResult(
        path=path, code=0, file=file_info(outcome.scope.relative(outcome.entry))
    )


def _failed(path: str, code: grpc.StatusCode, message: str) -> pb.LogArtifactsResult:
    return pb.LogArtifactsResult(path=path, code=code.value[0], message=message)
