"""ArtifactService: translates between protobuf messages and the storage adapter.

Every request path is parsed by the one grammar (`artifactd.paths.parse`) before any storage
call; the adapter only ever sees `ArtifactPath`s. No storage logic lives here.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from artifactd.errors import ArtifactError, InvalidArgument, OutOfRange
from artifactd.paths import MAX_PATH_BYTES, parse
from artifactd.server import limits, paging
from artifactd.server.status import InFlight, translate_errors
from artifactd.server.storage.base import Entry, Storage
from artifactd.server.uploads import (
    FileEvent,
    UploadMessage,
    UploadSpec,
    UploadStream,
    parse_digest,
)
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def file_info(entry: Entry) -> pb.FileInfo:
    modified = Timestamp()
    modified.FromNanoseconds(entry.mtime_ns)
    return pb.FileInfo(
        path=str(entry.path),
        is_dir=entry.is_dir,
        file_size=entry.size,
        sha256=entry.sha256 or "",
        modified_time=modified,
    )


def _upload_header(message: UploadMessage) -> tuple[str, Callable[[], UploadSpec]]:
    """The raw path (for error reports) and a parser of the header into an `UploadSpec`."""
    header: pb.UploadHeader = message.header  # type: ignore[attr-defined]

    def spec() -> UploadSpec:
        if header.HasField("size") and header.size < 0:
            raise InvalidArgument(f"size must not be negative, got {header.size}")
        return UploadSpec(
            path=parse(header.path),
            size=header.size if header.HasField("size") else None,
            sha256=parse_digest(header.sha256, "header sha256"),
            overwrite=header.overwrite != pb.OVERWRITE_POLICY_FAIL_IF_EXISTS,
        )

    return header.path, spec


def _finish_digest(message: UploadMessage) -> str | None:
    return parse_digest(message.finish.sha256, "finish sha256")  # type: ignore[attr-defined]


class ArtifactServicer(pb_grpc.ArtifactServiceServicer):
    def __init__(self, storage: Storage, committer: ThreadPoolExecutor) -> None:
        self._storage = storage
        self._committer = committer
        self.in_flight = InFlight()

    def _stream(self, max_files: int) -> UploadStream:
        return UploadStream(self._storage, _upload_header, _finish_digest, max_files)

    @translate_errors
    def LogArtifact(  # noqa: N802 - gRPC method names
        self, request_iterator: Iterator[pb.LogArtifactRequest], context: grpc.ServicerContext
    ) -> pb.LogArtifactResponse:
        events = self._stream(max_files=1).files(request_iterator)
        event = next(events, None)
        if event is None:
            raise InvalidArgument("the stream carried no message; send a header first")
        for extra in events:
            raise InvalidArgument(f"LogArtifact carries one file; '{extra.path}' followed")
        if event.error is not None:
            raise event.error
        assert event.commit is not None
        return pb.LogArtifactResponse(file=file_info(event.commit(True)))

    @translate_errors
    def LogArtifacts(  # noqa: N802
        self, request_iterator: Iterator[pb.LogArtifactsRequest], context: grpc.ServicerContext
    ) -> pb.LogArtifactsResponse:
        # Commits (fsync + rename) run on the committer pool while the next files arrive: with
        # small files the fsyncs, not the network, would otherwise set the pace.
        pending: deque[tuple[str, Future[Entry] | ArtifactError]] = deque()
        last_for_path: dict[str, Future[Entry]] = {}
        results: list[pb.LogArtifactsResult] = []

        def settle_oldest() -> None:
            path, outcome = pending.popleft()
            results.append(_result(path, outcome))

        def submit(event: FileEvent) -> None:
            if event.error is not None:
                pending.append((event.path, event.error))
                return
            assert event.commit is not None
            earlier = last_for_path.get(event.path)
            if earlier is not None:
                _wait_quietly(earlier)  # the same path twice: the later upload must win
            future = self._committer.submit(event.commit, False)
            last_for_path[event.path] = future
            pending.append((event.path, future))

        try:
            for event in self._stream(limits.MAX_BATCH_FILES).files(request_iterator):
                submit(event)
                while len(pending) > limits.PENDING_COMMITS_PER_STREAM:
                    settle_oldest()
        finally:
            while pending:
                settle_oldest()
            # One directory fsync per directory, not per file: results are durable when sent.
            self._storage.make_durable(
                parse(r.path) for r in results if r.code == grpc.StatusCode.OK.value[0]
            )
        return pb.LogArtifactsResponse(results=results)

    @translate_errors
    def DownloadArtifact(  # noqa: N802
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactResponse]:
        path = parse(request.path)
        if request.offset < 0 or request.limit < 0:
            raise InvalidArgument("offset and limit must not be negative")
        with self._storage.open_file(path) as reader:
            size = reader.entry.size
            if request.offset > size:
                raise OutOfRange(
                    f"offset {request.offset} is past the end of '{path}' ({size} bytes)"
                )
            chunks = reader.chunks(request.offset, request.limit, limits.CHUNK_SIZE)
            yield pb.DownloadArtifactResponse(info=file_info(reader.entry), data=next(chunks, b""))
            for chunk in chunks:
                yield pb.DownloadArtifactResponse(data=chunk)

    @translate_errors
    def DownloadArtifacts(  # noqa: N802
        self, request: pb.DownloadArtifactsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.DownloadArtifactsResponse]:
        root = parse(request.path, allow_root=True)
        for entry in self._storage.iter_tree(root, recursive=True):
            if entry.is_dir:
                yield pb.DownloadArtifactsResponse(file=file_info(entry))
                continue
            try:
                reader = self._storage.open_file(entry.path)
            except ArtifactError as exc:
                if exc.code == grpc.StatusCode.NOT_FOUND:
                    continue  # deleted since it was listed: not part of the tree any more
                raise
            with reader:
                chunks = reader.chunks(0, 0, limits.CHUNK_SIZE)
                yield pb.DownloadArtifactsResponse(
                    file=file_info(reader.entry), data=next(chunks, b"")
                )
                for chunk in chunks:
                    yield pb.DownloadArtifactsResponse(data=chunk)

    @translate_errors
    def ListArtifacts(  # noqa: N802
        self, request: pb.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> pb.ListArtifactsResponse:
        directory = parse(request.path, allow_root=True)
        if request.page_size < 0:
            raise InvalidArgument(f"page_size must not be negative, got {request.page_size}")
        page_size = min(request.page_size or limits.DEFAULT_PAGE_SIZE, limits.MAX_PAGE_SIZE)
        after = (
            paging.decode(request.page_token, directory, request.recursive)
            if request.page_token
            else None
        )
        entries = self._storage.iter_tree(directory, recursive=request.recursive, after=after)
        page = list(itertools.islice(entries, page_size + 1))
        token = ""
        if len(page) > page_size:
            page = page[:page_size]
            token = paging.encode(directory, request.recursive, page[-1].path)
        return pb.ListArtifactsResponse(files=[file_info(e) for e in page], next_page_token=token)

    @translate_errors
    def GetArtifact(  # noqa: N802
        self, request: pb.GetArtifactRequest, context: grpc.ServicerContext
    ) -> pb.GetArtifactResponse:
        entry = self._storage.stat(parse(request.path, allow_root=True))
        return pb.GetArtifactResponse(file=file_info(entry))

    @translate_errors
    def DeleteArtifacts(  # noqa: N802
        self, request: pb.DeleteArtifactsRequest, context: grpc.ServicerContext
    ) -> pb.DeleteArtifactsResponse:
        path = parse(request.path, what="path (the artifact root itself cannot be deleted)")
        existed = self._storage.delete(path)
        log.info("deleted %s (existed: %s)", path, existed)
        return pb.DeleteArtifactsResponse(existed=existed)

    @translate_errors
    def GetCapabilities(  # noqa: N802
        self, request: pb.GetCapabilitiesRequest, context: grpc.ServicerContext
    ) -> pb.GetCapabilitiesResponse:
        caps = self._storage.capabilities
        return pb.GetCapabilitiesResponse(
            chunk_size=limits.CHUNK_SIZE,
            max_message_size=limits.MAX_MESSAGE_SIZE,
            digest_function=limits.DIGEST_FUNCTION,
            max_batch_files=limits.MAX_BATCH_FILES,
            default_page_size=limits.DEFAULT_PAGE_SIZE,
            max_page_size=limits.MAX_PAGE_SIZE,
            max_path_length=MAX_PATH_BYTES,
            backend=self._storage.name,
            supports_range_reads=caps.range_reads,
            supports_multipart_upload=caps.multipart_upload,
            supports_presigned_urls=caps.presigned_urls,
        )


def _wait_quietly(future: Future[Entry]) -> None:
    """Waits for a commit; its own result entry reports any failure."""
    with contextlib.suppress(Exception):
        future.result()


def _result(path: str, outcome: Future[Entry] | ArtifactError) -> pb.LogArtifactsResult:
    if isinstance(outcome, ArtifactError):
        return pb.LogArtifactsResult(path=path, code=outcome.code.value[0], message=outcome.message)
    try:
        entry = outcome.result()
    except ArtifactError as exc:
        return pb.LogArtifactsResult(path=path, code=exc.code.value[0], message=exc.message)
    except Exception:
        log.exception("committing %s crashed", path)
        return pb.LogArtifactsResult(
            path=path, code=grpc.StatusCode.INTERNAL.value[0], message="internal server error"
        )
    return pb.LogArtifactsResult(path=path, code=0, file=file_info(entry))
