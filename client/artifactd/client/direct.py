"""Direct uploads: a large file goes in parts straight to storage through presigned URLs.

The server creates the session and hands out URLs; the bytes never pass through it. Parts go up
in parallel, each streamed from the file (memory per part is one read buffer, never the part),
each retried with backoff on network errors and 5xx/429 answers, and re-signed when storage
refuses a URL (403: expired) or it is about to expire. A fatal failure aborts the session, so
storage keeps nothing. A client killed midway resumes: the session id is kept in a small state
file keyed by destination and file (path, size, mtime), and the next attempt uploads only the
parts storage does not have yet.

TLS for part requests follows the storage variables MLflow applies to them:
`MLFLOW_S3_IGNORE_TLS` (no verification) and `AWS_CA_BUNDLE` / `REQUESTS_CA_BUNDLE` (CA file).
They only affect how URLs the server signed are fetched, never where artifacts go.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from artifactd.client.localfiles import publish_verified, temporary_name
from artifactd.client.rpc import call
from artifactd.protocol import environment
from artifactd.protocol.environment import Variable
from artifactd.protocol.errors import (
    ArtifactError,
    DataLoss,
    FailedPrecondition,
    NotFound,
    Unavailable,
)
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:  # imported by the first direct transfer: most commands never make one
    import urllib3

MiB = 1024 * 1024
DEFAULT_DOWNLOAD_CHUNK = environment.MULTIPART_DOWNLOAD_CHUNK.default
DEFAULT_MINIMUM_SIZE = environment.MULTIPART_UPLOAD_MINIMUM.default
DEFAULT_PART_SIZE = environment.MULTIPART_UPLOAD_PART.default
DEFAULT_WORKERS = environment.MULTIPART_WORKERS.default
READ_BUFFER = 1 * MiB
PART_ATTEMPTS = 5
REFRESH_MARGIN = 60.0  # seconds: a URL expiring sooner is re-signed before use


@dataclass(frozen=True)
class DirectSettings:
    enabled: bool = environment.MULTIPART_UPLOAD.default
    minimum_size: int = DEFAULT_MINIMUM_SIZE
    part_size: int = DEFAULT_PART_SIZE
    workers: int = DEFAULT_WORKERS
    state_dir: str = ""
    resumable_minimum_size: int = environment.RESUMABLE_MINIMUM.default
    download_enabled: bool = environment.MULTIPART_DOWNLOAD.default
    download_minimum_size: int = environment.MULTIPART_DOWNLOAD_MINIMUM.default
    download_chunk_size: int = DEFAULT_DOWNLOAD_CHUNK

    @classmethod
    def from_env(cls) -> DirectSettings:
        return cls(
            enabled=_on(environment.MULTIPART_UPLOAD),
            minimum_size=_size(environment.MULTIPART_UPLOAD_MINIMUM, 1),
            part_size=_size(environment.MULTIPART_UPLOAD_PART, 1),
            workers=_size(environment.MULTIPART_WORKERS, 1, 64),
            state_dir=environment.STATE_DIR.get()
            or os.path.join(os.path.expanduser("~"), ".cache", "artifactd", "uploads"),
            resumable_minimum_size=_size(environment.RESUMABLE_MINIMUM, 0),
            download_enabled=_on(environment.MULTIPART_DOWNLOAD),
            download_minimum_size=_size(environment.MULTIPART_DOWNLOAD_MINIMUM, 1),
            download_chunk_size=_size(environment.MULTIPART_DOWNLOAD_CHUNK, 1),
        )


def _on(variable: Variable[bool]) -> bool:
    """On unless the variable says false (direct transfers are the default here)."""
    return (variable.get() or "").strip().lower() not in ("false", "0", "no", "off")


def _size(variable: Variable[int], low: int, high: int | None = None) -> int:
    name = variable.name
    raw = (variable.get() or "").strip()
    if not raw:
        return variable.default
    if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise FailedPrecondition(f"{name}={raw!r} must be a whole number {bound}")
    return int(raw)


def _http_errors() -> type[Exception]:
    """urllib3's base error class (imported by then: `_http` made the pool)."""
    from urllib3.exceptions import HTTPError  # see the TYPE_CHECKING import

    return HTTPError


def _http() -> urllib3.PoolManager:
    import urllib3  # see the TYPE_CHECKING import

    if (environment.PRESIGNED_IGNORE_TLS.get() or "").strip().lower() in ("1", "true", "yes"):
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        return urllib3.PoolManager(maxsize=64, cert_reqs="CERT_NONE")
    bundle = environment.PRESIGNED_CA_BUNDLE.get() or environment.REQUESTS_CA_BUNDLE.get()
    if bundle:
        return urllib3.PoolManager(maxsize=64, ca_certs=bundle)
    return urllib3.PoolManager(maxsize=64)


def file_digest(local: str) -> str:
    digest = hashlib.sha256()
    with open(local, "rb") as fh:
        while block := fh.read(READ_BUFFER):
            digest.update(block)
    return digest.hexdigest()


class _PartReader:
    """Bytes [offset, offset + size) of a file, read as urllib3 sends them."""

    def __init__(self, local: str, offset: int, size: int, sent: Callable[[int], None]) -> None:
        self._local, self._offset, self._size, self._sent = local, offset, size, sent

    def __iter__(self) -> Iterator[bytes]:
        with open(self._local, "rb") as fh:
            fh.seek(self._offset)
            remaining = self._size
            while remaining > 0:
                block = fh.read(min(READ_BUFFER, remaining))
                if not block:
                    raise DataLoss(f"{self._local} shrank while it was being uploaded")
                remaining -= len(block)
                self._sent(len(block))
                yield block


class _Refused(Exception):
    """Storage refused a part's URL (expired or otherwise not accepted): sign it again."""


def _etag(part: pb.UploadPart, response: Any, local: str) -> str:
    """What identifies an uploaded part: the ETag storage answered with; for Azure blocks
    (which answer none) the block id the URL put it under; else the part's MD5, which is GCS's
    ETag for an object (its emulator answers uploads without the header)."""
    etag = response.headers.get("ETag")
    if etag:
        return str(etag)
    block = parse_qs(urlsplit(part.request.url).query).get("blockid")
    if block:
        return block[0]
    digest = hashlib.md5(usedforsecurity=False)
    for data in _PartReader(local, part.offset, part.size, lambda _n: None):
        digest.update(data)
    return digest.hexdigest()


class UploadRecord:
    """Where an open upload's id is kept between runs of a client, so a rerun after a crash
    continues it: one small file per (server, run, path, local file, size, mtime)."""

    def __init__(self, state_dir: str, identity: str, kind: str) -> None:
        name = hashlib.sha256(f"{kind}|{identity}".encode()).hexdigest()[:32]
        self._file = Path(state_dir) / f"{name}.json"

    def load(self) -> str | None:
        try:
            return str(json.loads(self._file.read_text())["upload_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save(self, upload_id: str) -> None:
        with contextlib.suppress(OSError):  # resuming is a convenience; the upload goes on
            self._file.parent.mkdir(parents=True, exist_ok=True)
            self._file.write_text(json.dumps({"upload_id": upload_id}))

    def forget(self) -> None:
        with contextlib.suppress(OSError):
            self._file.unlink()


class _DirectTransfer:
    def __init__(
        self,
        stub: pb_grpc.ArtifactServiceStub,
        settings: DirectSettings,
        rpc_timeout: float | None,
        progress: Callable[[int], object],
    ) -> None:
        self._stub = stub
        self._settings = settings
        self._timeout = rpc_timeout
        self._progress = progress

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        return call(method, request, self._timeout)


class DirectUpload(_DirectTransfer):
    """One file's direct upload; `run` returns the stored FileInfo, or None if unsupported."""

    def __init__(
        self,
        stub: pb_grpc.ArtifactServiceStub,
        settings: DirectSettings,
        rpc_timeout: float | None,
        progress: Callable[[int], object],
        identity: str,
    ) -> None:
        super().__init__(stub, settings, rpc_timeout, progress)
        self._record = UploadRecord(settings.state_dir, identity, "direct")
        self._lock = threading.Lock()
        self._urls: dict[int, pb.UploadPart] = {}
        self._part_count = 0

    def run(
        self,
        local: str,
        path: str,
        run_id: str,
        overwrite: pb.OverwritePolicy.ValueType,
        digest: Callable[[], str],
    ) -> pb.FileInfo | None:
        size = os.path.getsize(local)
        sha256 = digest()
        upload_id, layout = self._resume()
        if upload_id is None:
            created = self._call(
                self._stub.CreateMultipartUpload,
                pb.CreateMultipartUploadRequest(
                    path=path, run_id=run_id, size=size, sha256=sha256, overwrite=overwrite,
                    part_size=self._settings.part_size,
                ),
            )  # fmt: skip
            if not created.supported:
                return None
            upload_id = created.upload_id
            layout = (created.part_size, created.part_count)
            self._urls = {p.part_number: p for p in created.parts}
            self._record.save(upload_id)
            done: dict[int, str] = {}
        else:
            done = self._stored(upload_id, size, layout)
        part_size, part_count = layout
        self._part_count = part_count
        try:
            etags = self._send(upload_id, local, size, part_size, part_count, done)
            completed = self._call(
                self._stub.CompleteMultipartUpload,
                pb.CompleteMultipartUploadRequest(
                    upload_id=upload_id,
                    parts=[pb.StoredPart(part_number=n, etag=e) for n, e in sorted(etags.items())],
                ),
            )
        except (ArtifactError, OSError) as exc:
            if not isinstance(exc, Unavailable):  # a lost connection may resume next time
                self._abort(upload_id)
            raise
        self._record.forget()
        info: pb.FileInfo = completed.file
        if info.file_size != size or (info.sha256 and info.sha256 != sha256):
            raise DataLoss(
                f"storage reports {info.file_size} bytes, sha256 {info.sha256 or '?'} for "
                f"{path}; sent {size} bytes, sha256 {sha256}"
            )
        return info

    # -- resuming --------------------------------------------------------------------------

    def _resume(self) -> tuple[str | None, tuple[int, int]]:
        upload_id = self._record.load()
        if upload_id is None:
            return None, (0, 0)
        try:
            listed = self._call(
                self._stub.ListMultipartUploadParts,
                pb.ListMultipartUploadPartsRequest(upload_id=upload_id),
            )
        except NotFound:
            self._record.forget()
            return None, (0, 0)
        self._listed = listed
        return str(upload_id), (listed.part_size, listed.part_count)

    def _stored(self, upload_id: str, size: int, layout: tuple[int, int]) -> dict[int, str]:
        part_size, part_count = layout
        done = {}
        for part in self._listed.parts:
            last = size - part_size * (part_count - 1)
            if part.size == (part_size if part.part_number < part_count else last):
                done[part.part_number] = part.etag
        return done

    def _abort(self, upload_id: str) -> None:
        with contextlib.suppress(ArtifactError):  # else the server's sweeper aborts it later
            self._call(
                self._stub.AbortMultipartUpload, pb.AbortMultipartUploadRequest(upload_id=upload_id)
            )
        self._record.forget()

    # -- parts -----------------------------------------------------------------------------

    def _url(self, upload_id: str, number: int, *, fresh: bool = False) -> pb.UploadPart:
        with self._lock:
            part = self._urls.get(number)
            soon = time.time() + REFRESH_MARGIN
            if fresh or part is None or part.request.expires_time.ToSeconds() < soon:
                ahead = range(number + 1, min(number + 50, self._part_count + 1))
                wanted = [number] + [n for n in ahead if n not in self._urls]
                reply = self._call(
                    self._stub.GetMultipartUploadUrls,
                    pb.GetMultipartUploadUrlsRequest(upload_id=upload_id, part_numbers=wanted),
                )
                self._urls.update({p.part_number: p for p in reply.parts})
                part = self._urls[number]
            return part

    def _send(
        self,
        upload_id: str,
        local: str,
        size: int,
        part_size: int,
        part_count: int,
        done: dict[int, str],
    ) -> dict[int, str]:
        http = _http()
        etags = dict(done)
        last = size - part_size * (part_count - 1)
        for number in done:
            self._progress(part_size if number < part_count else last)
        todo = [n for n in range(1, part_count + 1) if n not in done]
        with ThreadPoolExecutor(self._settings.workers, thread_name_prefix="part") as pool:
            futures = {pool.submit(self._put, http, upload_id, local, n): n for n in todo}
            finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in finished:
                if future.exception() is not None:
                    for other in futures:
                        other.cancel()
                    raise future.exception()  # type: ignore[misc]
            for future, number in futures.items():
                etags[number] = future.result()
        return etags

    def _put(self, http: urllib3.PoolManager, upload_id: str, local: str, number: int) -> str:
        fresh = False
        for attempt in range(PART_ATTEMPTS):
            part = self._url(upload_id, number, fresh=fresh)
            sent = 0

            def count(n: int) -> None:
                nonlocal sent
                sent += n
                self._progress(n)

            headers = dict(part.request.headers)
            headers["Content-Length"] = str(part.size)
            try:
                response = http.request(
                    part.request.method or "PUT",
                    part.request.url,
                    body=_PartReader(local, part.offset, part.size, count),
                    headers=headers,
                    retries=False,
                    preload_content=True,
                )
            except _http_errors() as exc:
                self._progress(-sent)
                if attempt == PART_ATTEMPTS - 1:
                    raise Unavailable(f"part {number} could not be uploaded: {exc}") from None
                _pause(attempt)
                continue
            if 200 <= response.status < 300:
                return _etag(part, response, local)
            self._progress(-sent)
            body = response.data[:300].decode("utf-8", "replace")
            if response.status in (401, 403) and attempt < PART_ATTEMPTS - 1:
                fresh = True  # expired or refused signature: sign again
                continue
            if (response.status >= 500 or response.status in (408, 429)) and (
                attempt < PART_ATTEMPTS - 1
            ):
                _pause(attempt)
                continue
            raise FailedPrecondition(
                f"storage refused part {number} with HTTP {response.status}: {body}"
            )
        raise Unavailable(f"part {number} could not be uploaded after {PART_ATTEMPTS} attempts")


def _pause(attempt: int) -> None:
    time.sleep(min(8.0, 0.25 * 2**attempt))


class DirectDownload(_DirectTransfer):
    """One file fetched straight from storage with parallel range GETs of a presigned URL."""

    def run(self, path: str, run_id: str, target: str) -> bool:
        """Downloads into `target` (verified, then renamed into place); False if the storage
        cannot presign, so the caller streams instead."""
        reply = self._call(
            self._stub.GetDownloadUrl, pb.GetDownloadUrlRequest(path=path, run_id=run_id)
        )
        if not reply.supported:
            return False
        size, chunk = reply.file.file_size, self._settings.download_chunk_size
        temp = temporary_name(target)
        http = _http()
        # a new file, never one found there (O_EXCL refuses a planted name or symlink)
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666
        )
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        ranges = _ranges(size, chunk, self._settings.workers)
        expected = reply.file.sha256 or None
        digest = _InOrderDigest(temp, ranges) if expected else None
        writer = _RangeWriter(temp, digest)
        try:
            with ThreadPoolExecutor(self._settings.workers, thread_name_prefix="range") as pool:
                list(
                    pool.map(
                        lambda i: self._fetch(http, reply.request, writer, ranges[i], i),
                        range(len(ranges)),
                    )
                )
            writer.close()
            if digest is not None and (actual := digest.result()) != expected:
                raise DataLoss(
                    f"{target!r}: sha256 is {actual} but the server stored {expected}; "
                    "the download was discarded"
                )
        except BaseException:
            with contextlib.suppress(OSError):
                writer.close()
            if digest is not None:
                digest.stop()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise
        publish_verified(temp, target, size, None)  # the size; the digest was checked above
        return True

    def _fetch(
        self, http: urllib3.PoolManager, request: pb.PresignedRequest, writer: _RangeWriter,
        span: tuple[int, int], index: int,
    ) -> None:  # fmt: skip
        start, end = span
        headers = {**request.headers, "Range": f"bytes={start}-{end - 1}"}
        for attempt in range(PART_ATTEMPTS):
            position = start
            try:
                response = http.request(
                    "GET", request.url, headers=headers, retries=False, preload_content=False
                )
                try:
                    if response.status not in (200, 206):
                        body = response.read(300).decode("utf-8", "replace")
                        if response.status >= 500 and attempt < PART_ATTEMPTS - 1:
                            _pause(attempt)
                            continue
                        raise FailedPrecondition(
                            f"storage refused bytes {start}-{end - 1} with HTTP "
                            f"{response.status} (the file changed, or the URL expired): {body}"
                        )
                    for block in response.stream(READ_BUFFER):
                        if position + len(block) > end:
                            raise DataLoss("storage sent more bytes than the range asked")
                        writer.put(index, position, block)
                        position += len(block)
                        self._progress(len(block))
                finally:
                    response.release_conn()
            except _http_errors() as exc:
                self._progress(start - position)
                if attempt == PART_ATTEMPTS - 1:
                    raise Unavailable(
                        f"bytes {start}-{end - 1} could not be fetched: {exc}"
                    ) from None
                _pause(attempt)
                continue
            if position == end:
                return
            self._progress(start - position)
        raise Unavailable(f"bytes {start}-{end - 1} could not be fetched")


class _RangeWriter:
    """One thread writes every range's blocks at their places in the file.

    Ranges arrive on several threads, but several threads writing one file contend for its
    inode lock: measured here, 1.2-1.6 s of system CPU per GiB against 0.53 s for one writer.
    A range's blocks are written in the order they were handed over, and the digest is told
    what is in the file as they are.
    """

    def __init__(self, path: str, digest: _InOrderDigest | None) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._digest = digest
        self._queue: queue.Queue[tuple[int, int, bytes] | None] = queue.Queue(maxsize=16)
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._write, name="writer", daemon=True)
        self._thread.start()

    def put(self, index: int, position: int, data: bytes) -> None:
        """Queues `data` for range `index` at `position` (waits while 16 blocks are queued)."""
        if self._error is not None:
            raise self._error
        self._queue.put((index, position, data))

    def _write(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drained until close
            index, position, data = item
            try:
                with memoryview(data) as view:
                    done = 0
                    while done < len(view):
                        done += os.pwrite(self._fd, view[done:], position + done)
            except OSError as exc:
                self._error = exc
                continue
            if self._digest is not None:
                self._digest.written(index, position + len(data))

    def close(self) -> None:
        """Writes what is queued and closes the file; raises the first write error."""
        if self._fd < 0:
            return
        self._queue.put(None)
        self._thread.join()
        os.close(self._fd)
        self._fd = -1
        if self._error is not None:
            raise self._error


def _ranges(size: int, chunk: int, workers: int) -> list[tuple[int, int]]:
    """Ranges of at most `chunk` bytes, as many as a multiple of `workers` (no last round that
    keeps one busy while the others wait), of one size, in whole MiB where that fits `chunk`."""
    if size <= 0:
        return []
    count = -(-size // chunk)
    count = -(-count // workers) * workers
    step = -(-size // count)
    if (rounded := -(-step // MiB) * MiB) <= chunk:
        step = rounded
    return [(start, min(size, start + step)) for start in range(0, size, step)]


class _InOrderDigest:
    """The sha256 of a file whose ranges are written in parallel, computed while they arrive.

    A thread reads back from the file (the page cache) every byte once all bytes before it are
    written, so hashing overlaps the transfer on another core and only what lands last is left
    to hash when it ends, instead of the whole file afterwards. A range fetched again after a
    failure rewrites the same bytes (its GET is pinned to one version by If-Match), so what was
    hashed stays valid.
    """

    def __init__(self, path: str, ranges: list[tuple[int, int]]) -> None:
        self._path = path
        self._ranges = ranges
        self._written = [start for start, _ in ranges]
        self._size = ranges[-1][1] if ranges else 0
        self._changed = threading.Condition()
        self._stopped = False
        self._error: BaseException | None = None
        self._digest = hashlib.sha256()
        self._thread = threading.Thread(target=self._hash, name="sha256", daemon=True)
        self._thread.start()

    def written(self, index: int, position: int) -> None:
        """Range `index` holds its bytes up to `position` (absolute) in the file."""
        with self._changed:
            if position > self._written[index]:
                self._written[index] = position
                self._changed.notify()

    def _contiguous(self) -> int:
        for (_start, end), written in zip(self._ranges, self._written, strict=True):
            if written < end:
                return written
        return self._size

    def _hash(self) -> None:
        buffer = bytearray(READ_BUFFER)
        view = memoryview(buffer)
        hashed = 0
        try:
            with open(self._path, "rb", buffering=0) as fh:
                while hashed < self._size:
                    with self._changed:
                        while not self._stopped and (ready := self._contiguous()) <= hashed:
                            self._changed.wait()
                        if self._stopped:
                            return
                    while hashed < ready:
                        count = fh.readinto(view[: min(len(buffer), ready - hashed)])
                        if not count:
                            raise DataLoss(f"{self._path} shrank while it was being downloaded")
                        self._digest.update(view[:count])
                        hashed += count
        except BaseException as exc:  # handed to result()
            self._error = exc

    def result(self) -> str:
        """The hex digest, once every range is written."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._digest.hexdigest()

    def stop(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify()
        self._thread.join()
