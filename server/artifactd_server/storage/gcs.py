"""Google Cloud Storage: the artifact root is `gs://bucket/prefix` (google-cloud-storage).

Key layout, listings (one level at a time, `delimiter='/'`), deletes and the upload buffering
policy are shared with S3 (`object_store.py`).

Configuration, as MLflow reads it: `MLFLOW_GCS_UPLOAD_CHUNK_SIZE` and
`MLFLOW_GCS_DOWNLOAD_CHUNK_SIZE` (bytes, multiples of 256 KiB, checked at start-up; default
8 MiB), `MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` (seconds per attempt, default 60; retries end
after three times that),
`STORAGE_EMULATOR_HOST` (then anonymous), else Application Default Credentials, falling back to
anonymous access when there are none.

Uploads: a file up to one upload chunk is stored with one request at commit. A larger one is
sent chunk by chunk, each chunk a hidden object `<dir>/.artifactd-upload-<uuid>-<n>` (never
listed), and composed into the final name at commit, then the chunk objects are deleted; every
32 chunks are composed into one (GCS composes at most 32 sources). Chosen over a resumable
session finalized at commit because the chunk objects can be listed, so the start-up sweep finds
what a killed server left behind (a resumable session cannot be listed), and because it works the
same on gcp-storage-emulator. Fail-if-exists is `if_generation_match=0` on the final write (the
store refuses atomically; gcp-storage-emulator does not enforce it, so the existing object is also
checked just before). The sha256 is object metadata. Downloads are ranged reads of the
generation the entry described, so an overwrite during a download fails it (ABORTED).

Direct transfers (`DirectTransfers`): GCS has no multipart upload API in its JSON API (nor
gcp-storage-emulator in its XML one), so part `n` of direct upload `U` is the hidden object
`<dir>/.artifactd-upload-<U>-<n:05d>`, which the client PUTs with a V4-signed URL (no signed
headers; `create_multipart` creates nothing, `U` is a fresh uuid). Completing composes the parts
in order into the final name exactly as a streamed upload's chunks are (same folding, same
fail-if-exists, same digest metadata), then deletes them; aborting deletes them; the start-up
sweep removes what neither did. A part's ETag is the lower-case hex MD5 of its bytes, which is what
GCS's XML API answers a PUT with (quoted); gcp-storage-emulator answers with no ETag at all. A
download URL is a V4-signed GET pinned to the generation it describes. Signing needs credentials
that can sign: the client's own when they are a service account, else the service-account key
file `ARTIFACTD_GCS_SIGNING_KEY_FILE` (used for signing only; this is how the emulator, whose API
calls are anonymous, gets one). Without either, direct transfers are not offered.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials, Credentials, Signing
from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY
from google.oauth2 import service_account

from artifactd.protocol.environment import Variable
from artifactd.protocol.errors import (
    Aborted,
    ArtifactError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from artifactd.protocol.paths import RESERVED_PREFIX, ROOT, ArtifactPath
from artifactd_server import settings
from artifactd_server.storage.base import (
    DirectTransfers,
    Entry,
    FileReader,
    PartLimits,
    PresignedRequest,
    StorageCapabilities,
    StoredPart,
    Upload,
)
from artifactd_server.storage.common import REQUEST_ATTEMPTS, already_exists, transfer_timeout
from artifactd_server.storage.object_store import (
    DIGEST_KEY,
    BufferedUpload,
    ObjectInfo,
    ObjectStoreStorage,
    http_error,
    parse_bucket_destination,
    unreachable,
    valid_digest,
)

log = logging.getLogger(__name__)

CHUNK_QUANTUM = 256 * 1024
DEFAULT_CHUNK_SIZE = settings.GCS_UPLOAD_CHUNK.default
MAX_COMPOSE = 32
UPLOAD_PREFIX = f"{RESERVED_PREFIX}upload-"
SIGNING_KEY_VARIABLE = settings.GCS_SIGNING_KEY_FILE.name
MAX_SIGNED_TTL = 7 * 24 * 3600
"""The longest a V4-signed URL may be valid (GCS's limit)."""
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_PART_NUMBER = re.compile(r"^[0-9]{5}$")
_T = TypeVar("_T")


class GCSStorage(ObjectStoreStorage, DirectTransfers):
    """An artifact root under `gs://bucket/prefix`."""

    name = "gcs"
    part_limits = PartLimits(min_size=1, max_size=5 * 1024**3, max_parts=10_000)

    def __init__(self, destination: str, *, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._bucket_name, prefix = _parse_destination(destination)
        super().__init__(prefix)
        self.upload_chunk = _chunk_size(env, settings.GCS_UPLOAD_CHUNK)
        self.download_chunk = _chunk_size(env, settings.GCS_DOWNLOAD_CHUNK)
        self._request_timeout = transfer_timeout(env)
        self._client, credentials = _make_client(env)
        self.bucket = self._client.bucket(self._bucket_name)
        self._signer = _signing_credentials(env, credentials)
        # signed URLs go where the client's own requests go (the emulator's address, if any)
        self._signed_endpoint = _with_scheme(str(self._client.api_endpoint))
        direct = self._signer is not None
        self.capabilities = StorageCapabilities(
            range_reads=True, multipart_upload=direct, presigned_urls=direct
        )

    @property
    def request(self) -> dict[str, Any]:
        """The timeout and retries of one request (a fresh retry budget each time).

        Each attempt waits at most the storage timeout, and there are at most
        REQUEST_ATTEMPTS attempts within REQUEST_ATTEMPTS times it: the library's default
        retries for two minutes, and a deadline alone would still retry a refused connection,
        which fails at once, for the whole of it (three minutes at the default timeout).
        """
        timeout = self._request_timeout
        return {"timeout": timeout, "retry": _bounded_retry(timeout)}

    @property
    def uri(self) -> str:
        name = self._bucket_name
        return f"gs://{name}/{self._prefix}" if self._prefix else f"gs://{name}"

    def call(self, path: ArtifactPath, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except gexc.GoogleAPICallError as exc:
            raise gcs_error(exc, path) from None
        except (gexc.RetryError, requests.RequestException, GoogleAuthError, OSError) as exc:
            raise gcs_error(exc, path) from None

    # -- the object-store primitives --------------------------------------------------------

    def _head_key(self, key: str, path: ArtifactPath) -> ObjectInfo | None:
        blob = self.call(path, lambda: self.bucket.get_blob(key, **self.request))
        return None if blob is None else _info(blob)

    def _any_below(self, prefix: str, path: ArtifactPath) -> bool:
        def first() -> bool:
            blobs = self._client.list_blobs(
                self.bucket, prefix=prefix, max_results=1, **self.request
            )
            return any(True for _ in blobs)

        return self.call(path, first)

    def _list_level(
        self, prefix: str, start_after: str | None, path: ArtifactPath
    ) -> Iterator[tuple[str, ObjectInfo | None]]:
        kwargs: dict[str, Any] = {"prefix": prefix, "delimiter": "/", **self.request}
        if start_after is not None:
            kwargs["start_offset"] = start_after  # inclusive; the walk skips what it returned
        iterator = self._client.list_blobs(self.bucket, **kwargs)
        pages = self.call(path, lambda: iter(iterator.pages))
        while True:
            page = self.call(path, lambda: next(pages, None))
            if page is None:
                return
            blobs = self.call(path, lambda: list(page))  # noqa: B023 - called right here
            for sub in sorted(page.prefixes):
                yield sub[len(prefix) : -1], None
            for blob in blobs:
                yield blob.name[len(prefix) :], _info(blob)

    def _delete_key(self, key: str, path: ArtifactPath) -> None:
        try:
            self.bucket.delete_blob(key, **self.request)
        except gexc.NotFound:
            pass
        except (gexc.GoogleAPIError, requests.RequestException, GoogleAuthError) as exc:
            raise gcs_error(exc, path) from None

    def _delete_below(self, prefix: str, path: ArtifactPath) -> bool:
        names = self.call(
            path,
            lambda: [
                b.name for b in self._client.list_blobs(self.bucket, prefix=prefix, **self.request)
            ],
        )
        for name in names:
            self._delete_key(name, path)
        return bool(names)

    def _reader(self, entry: Entry, info: ObjectInfo) -> FileReader:
        return _GCSReader(self, entry, info.version)

    def _upload(self, path: ArtifactPath) -> Upload:
        return _GCSUpload(self, path)

    # -- what streamed and direct uploads share ---------------------------------------------

    def hidden_name(self, path: ArtifactPath, upload_id: str) -> str:
        """`<dir of path>/.artifactd-upload-<upload_id>`: the stem of an upload's hidden objects
        (never listed; the start-up sweep removes them once stale)."""
        directory = self.key(path).rpartition("/")[0]
        stem = f"{UPLOAD_PREFIX}{upload_id}"
        return f"{directory}/{stem}" if directory else stem

    def compose_hidden(self, path: ArtifactPath, sources: Sequence[str], name: str) -> None:
        """Composes up to `MAX_COMPOSE` objects, in order, into the hidden object `name`."""
        target = self.bucket.blob(name)
        blobs = [self.bucket.blob(n) for n in sources]
        self.call(path, lambda: target.compose(blobs, **self.request))

    def write_final(
        self,
        path: ArtifactPath,
        sha256: str | None,
        overwrite: bool,
        write: Callable[[gcs.Blob, int | None], object],
    ) -> gcs.Blob:
        """Creates the object at `path` with `write(blob, if_generation_match)`, the digest in
        its metadata; with `overwrite=False`, `AlreadyExists` if an object is there."""
        key = self.key(path)
        blob = self.bucket.blob(key)
        if sha256:
            blob.metadata = {DIGEST_KEY: sha256}
        if not overwrite and self._head_key(key, path) is not None:
            # the precondition below is the real guard; gcp-storage-emulator ignores it
            raise already_exists(path)
        condition = None if overwrite else 0

        def guarded() -> object:
            try:
                return write(blob, condition)
            except gexc.PreconditionFailed:
                if overwrite:
                    raise
                raise already_exists(path) from None

        self.call(path, guarded)
        return blob

    def compose_final(
        self, path: ArtifactPath, sources: Sequence[str], sha256: str | None, overwrite: bool
    ) -> gcs.Blob:
        """Composes `sources` (any number, in order) into the object at `path` (`write_final`).

        More than `MAX_COMPOSE` sources are first composed 32 at a time into hidden objects of
        their own, round after round, and those are deleted afterwards; `sources` are left.
        """
        scratch = self.hidden_name(path, uuid.uuid4().hex)
        made: list[str] = []
        try:
            names = list(sources)
            while len(names) > MAX_COMPOSE:
                folded: list[str] = []
                for start in range(0, len(names), MAX_COMPOSE):
                    group = names[start : start + MAX_COMPOSE]
                    if len(group) == 1:
                        folded.extend(group)
                        continue
                    name = f"{scratch}-{len(made) + 1}"
                    made.append(name)  # before the request: a failed one may still have landed
                    self.compose_hidden(path, group, name)
                    folded.append(name)
                names = folded
            blobs = [self.bucket.blob(n) for n in names]
            return self.write_final(
                path,
                sha256,
                overwrite,
                lambda blob, condition: blob.compose(
                    blobs, if_generation_match=condition, **self.request
                ),
            )
        finally:
            self.delete_hidden(path, made)

    def delete_hidden(self, path: ArtifactPath, names: Sequence[str]) -> bool:
        """Deletes upload objects; a failure is logged (they are hidden, and swept later).
        Whether all of them went. Once GCS is unreachable the rest are left to the sweeper at
        once: each delete would wait out its retries (up to three storage timeouts), and an
        aborted upload of a large file has one chunk object per 8 MiB."""
        deleted = True
        for index, name in enumerate(names):
            try:
                self._delete_key(name, path)
            except Unavailable as exc:
                log.warning("could not delete %d upload objects of '%s' (left to the sweeper): %s",
                            len(names) - index, path, exc.message)  # fmt: skip
                return False
            except ArtifactError as exc:
                log.warning("could not delete the upload object %r: %s", name, exc.message)
                deleted = False
        return deleted

    def discard_leftover(self, path: ArtifactPath, handle: str) -> None:
        """Deletes the chunk objects of a file streamed to `path` by a server that died
        (`_GCSUpload.on_cleanup_handle` reported their id)."""
        self.abort_multipart(path, handle)

    def sweep_incomplete_uploads(self, older_than: float) -> int:
        """Deletes upload objects (`.artifactd-upload-*`) older than `older_than` seconds: chunks
        of streamed uploads and parts of direct ones (whose sessions last no longer)."""
        cutoff = time.time() - older_than
        removed = 0

        def stale() -> list[str]:
            blobs = self._client.list_blobs(
                self.bucket, prefix=self.dir_prefix(ROOT), **self.request
            )
            return [
                b.name
                for b in blobs
                if b.name.rsplit("/", 1)[-1].startswith(UPLOAD_PREFIX)
                and b.updated is not None
                and b.updated.timestamp() < cutoff
            ]

        for name in self.call(ROOT, stale):
            self._delete_key(name, ROOT)
            removed += 1
        return removed

    def close(self) -> None:
        self._client.close()

    # -- direct transfers --------------------------------------------------------------------

    def direct_upload_refusal(self) -> str | None:
        if self._signer is not None:
            return None
        return (
            "direct transfers with GCS need credentials that can sign URLs, and the server's "
            "cannot: give it a service-account key (as its Application Default Credentials, or "
            f"named by {SIGNING_KEY_VARIABLE} for signing only)"
        )

    def create_multipart(self, path: ArtifactPath, *, size: int, sha256: str | None) -> str:
        """Nothing is created: the parts are objects of their own, named after the id."""
        self._require_signer()
        self.check_writable(path)
        return uuid.uuid4().hex

    def presign_part(
        self, path: ArtifactPath, upload_id: str, number: int, size: int, ttl: float
    ) -> PresignedRequest:
        limits = self.part_limits
        if not 1 <= number <= limits.max_parts:
            raise InvalidArgument(f"part numbers run from 1 to {limits.max_parts}, not {number}")
        if not 0 <= size <= limits.max_size:
            raise InvalidArgument(f"a part holds at most {limits.max_size} bytes, not {size}")
        return self._sign(path, self._part_name(path, upload_id, number), "PUT", ttl)

    def list_parts(self, path: ArtifactPath, upload_id: str) -> list[StoredPart]:
        """The part objects there are (none, not `NotFound`, for an upload that never had one
        or is gone: there is nothing else in storage to tell the two apart)."""
        stem = f"{self._stem(path, upload_id)}-"

        def listed() -> list[StoredPart]:
            blobs = self._client.list_blobs(self.bucket, prefix=stem, **self.request)
            parts = []
            for blob in blobs:
                suffix = blob.name[len(stem) :]
                if _PART_NUMBER.match(suffix):
                    parts.append(StoredPart(int(suffix), _part_etag(blob), int(blob.size or 0)))
            return parts

        return sorted(self.call(path, listed), key=lambda p: p.number)

    def complete_multipart(
        self,
        path: ArtifactPath,
        upload_id: str,
        parts: Sequence[StoredPart],
        *,
        size: int,
        sha256: str | None,
        overwrite: bool,
    ) -> Entry:
        if not parts:
            raise FailedPrecondition(f"the multipart upload of '{path}' has no parts")
        ordered = sorted(parts, key=lambda p: p.number)
        names = [self._part_name(path, upload_id, p.number) for p in ordered]
        blob = self.compose_final(path, names, sha256, overwrite)
        info = _info(blob)
        if info.size != size:
            # A part was replaced (its URL still valid) after the server checked it: what was
            # published is not the file the digest describes, so it must not stay.
            try:
                self.call(
                    path,
                    lambda: blob.delete(if_generation_match=blob.generation, **self.request),
                )
            except ArtifactError as exc:
                log.error("could not delete the mis-sized object %r: %s", blob.name, exc.message)
            raise FailedPrecondition(
                f"the parts of '{path}' came to {info.size} bytes, not {size}: a part changed "
                "after it was checked; upload it again"
            )
        self.delete_hidden(path, names)
        return Entry(path, False, info.size, info.mtime_ns or time.time_ns(), valid_digest(sha256))

    def abort_multipart(self, path: ArtifactPath, upload_id: str) -> None:
        if _UPLOAD_ID.match(upload_id):
            self._delete_below(f"{self.hidden_name(path, upload_id)}-", path)

    def presign_download(self, path: ArtifactPath, ttl: float) -> tuple[Entry, PresignedRequest]:
        self._require_signer()
        with self.open_file(path) as reader:  # NotFound / FailedPrecondition as for a download
            entry = reader.entry
            generation = reader.generation if isinstance(reader, _GCSReader) else None
        # pinned: once the object is replaced, the URL serves nothing rather than the new bytes
        request = self._sign(path, self.key(path), "GET", ttl, generation=generation)
        return entry, request

    def _require_signer(self) -> Signing:
        if self._signer is None:
            raise FailedPrecondition(self.direct_upload_refusal() or "")
        return self._signer

    def _stem(self, path: ArtifactPath, upload_id: str) -> str:
        if not _UPLOAD_ID.match(upload_id):
            raise NotFound(f"there is no multipart upload {upload_id!r} of '{path}'")
        return self.hidden_name(path, upload_id)

    def _part_name(self, path: ArtifactPath, upload_id: str, number: int) -> str:
        return f"{self._stem(path, upload_id)}-{number:05d}"

    def _sign(
        self, path: ArtifactPath, name: str, method: str, ttl: float, generation: Any = None
    ) -> PresignedRequest:
        signer = self._require_signer()
        seconds = max(1, min(int(ttl), MAX_SIGNED_TTL))
        signed_at = int(time.time())  # the URL's own clock starts at or after this second
        blob = self.bucket.blob(name)
        url = self.call(
            path,
            lambda: blob.generate_signed_url(
                version="v4",
                expiration=timedelta(seconds=seconds),
                method=method,
                credentials=signer,
                api_access_endpoint=self._signed_endpoint,
                generation=generation,
            ),
        )
        return PresignedRequest(str(url), method, {}, float(signed_at + seconds))


class _GCSUpload(BufferedUpload):
    def __init__(self, storage: GCSStorage, path: ArtifactPath) -> None:
        super().__init__(path, storage.upload_chunk)
        self._storage = storage
        self._id = uuid.uuid4().hex
        self._temp = storage.hidden_name(path, self._id)
        self._parts: list[str] = []
        self._counter = 0
        self._report: Callable[[str | None], None] | None = None
        self._reported = False

    def on_cleanup_handle(self, report: Callable[[str | None], None]) -> None:
        """Reports the id naming this upload's chunk objects before the first is stored, and
        None once they are all gone (composed and deleted, or aborted): a killed server's
        chunks are then deleted by another's sweeper (`GCSStorage.discard_leftover`)."""
        self._report = report

    def _new_part_name(self) -> str:
        self._counter += 1
        return f"{self._temp}-{self._counter}"

    def _send_part(self, data: bytes) -> None:
        storage = self._storage
        if self._report is not None and not self._reported:
            self._reported = True
            self._report(self._id)  # raising: the caller's abort discards what there is
        name = self._new_part_name()
        self._parts.append(name)  # before the request: a failed one may still have landed
        storage.call(
            self._path,
            lambda: storage.bucket.blob(name).upload_from_string(
                data, if_generation_match=0, **storage.request, checksum="crc32c"
            ),
        )
        if len(self._parts) == MAX_COMPOSE:
            self._fold()

    def _fold(self) -> None:
        """Composes the chunk objects so far into one (GCS composes at most 32 sources)."""
        name = self._new_part_name()
        self._storage.compose_hidden(self._path, self._parts, name)
        old, self._parts = self._parts, [name]
        for part in old:
            self._storage._delete_key(part, self._path)

    def _put_whole(self, data: bytes, sha256: str, overwrite: bool) -> None:
        request = self._storage.request
        self._storage.write_final(
            self._path,
            sha256,
            overwrite,
            lambda blob, condition: blob.upload_from_string(
                data, if_generation_match=condition, **request, checksum="crc32c"
            ),
        )

    def _finish_parts(self, sha256: str, overwrite: bool) -> None:
        self._storage.compose_final(self._path, self._parts, sha256, overwrite)
        self._discard()

    def _discard(self) -> None:
        parts, self._parts = self._parts, []
        if self._storage.delete_hidden(self._path, parts) and self._reported:
            self._reported = False
            if self._report is not None:
                self._report(None)  # every chunk is gone: nothing left to record


class _GCSReader(FileReader):
    def __init__(self, storage: GCSStorage, entry: Entry, generation: Any) -> None:
        self._storage = storage
        self.generation = generation
        self.entry = entry

    def chunks(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        path, size = self.entry.path, self.entry.size
        end = size if limit == 0 else min(size, offset + limit)
        storage = self._storage
        blob = storage.bucket.blob(storage.key(path), generation=self.generation)
        position = offset
        while position < end:
            stop = min(end, position + storage.download_chunk)
            try:
                data = blob.download_as_bytes(
                    start=position,
                    end=stop - 1,
                    raw_download=True,
                    **storage.request,
                    checksum=None,
                )
            except gexc.NotFound:
                raise Aborted(
                    f"'{path}' was replaced while being read; download it again"
                ) from None
            except (gexc.GoogleAPIError, requests.RequestException, GoogleAuthError) as exc:
                raise gcs_error(exc, path) from None
            if not data:
                break
            position += len(data)
            for start in range(0, len(data), chunk_size):
                yield data[start : start + chunk_size]
        if position != end:
            raise DataLoss(
                f"'{path}': the object store sent {position - offset} of {end - offset} bytes"
            )

    def close(self) -> None:
        pass


# -- configuration -------------------------------------------------------------------------


def _parse_destination(destination: str) -> tuple[str, str]:
    return parse_bucket_destination(
        destination, "gs", "GCS", _BUCKET, "lower-case letters, digits, '.', '_' and '-'"
    )


def _chunk_size(env: dict[str, str], variable: Variable[int]) -> int:
    name = variable.name
    raw = (variable.get(env) or "").strip()
    if not raw:
        return variable.default
    if not raw.isdigit() or int(raw) == 0 or int(raw) % CHUNK_QUANTUM:
        raise InvalidArgument(
            f"{name} {raw!r} must be a positive number of bytes that is a multiple of 256 KiB "
            f"({CHUNK_QUANTUM}), e.g. {DEFAULT_CHUNK_SIZE}"
        )
    return int(raw)


def _make_client(env: dict[str, str]) -> tuple[gcs.Client, Credentials | None]:
    emulator = settings.GCS_EMULATOR_HOST.get(env)
    if emulator:
        # the library reads the variable itself (from os.environ): keep the two in step
        os.environ.setdefault(settings.GCS_EMULATOR_HOST.name, emulator)
        project = settings.GCS_PROJECT.get(env) or settings.GCS_PROJECT.default
        anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
        return gcs.Client(project=project, credentials=anonymous), anonymous
    try:
        credentials, default_project = google.auth.default()
    except DefaultCredentialsError:
        log.info("no Google credentials found; using anonymous access to GCS")
        return gcs.Client.create_anonymous_client(), None
    return gcs.Client(project=default_project, credentials=credentials), credentials


def _signing_credentials(env: dict[str, str], credentials: Credentials | None) -> Signing | None:
    """What signs URLs: the client's credentials if they can, else `SIGNING_KEY_VARIABLE`'s key
    (checked at start-up), else nothing (direct transfers are then not offered)."""
    if isinstance(credentials, Signing):
        return credentials
    key_file = (settings.GCS_SIGNING_KEY_FILE.get(env) or "").strip()
    if not key_file:
        return None
    try:
        signer: Signing = service_account.Credentials.from_service_account_file(key_file)  # type: ignore[no-untyped-call]
    except (OSError, ValueError) as exc:  # no key material in either: a path, a field name
        raise InvalidArgument(
            f"{SIGNING_KEY_VARIABLE} {key_file!r} is not a readable service-account key file: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from None
    return signer


def _with_scheme(endpoint: str) -> str:
    """STORAGE_EMULATOR_HOST may be `host:port`; a URL needs a scheme."""
    return endpoint.rstrip("/") if "://" in endpoint else f"http://{endpoint.rstrip('/')}"


# -- helpers -------------------------------------------------------------------------------


def _ns(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1_000_000) * 1000


def _part_etag(blob: gcs.Blob) -> str:
    """The hex MD5 GCS's XML API answers a PUT with (without its quotes); the object's JSON
    `etag` is something else, so it is only the fallback for an object without an MD5."""
    try:
        return base64.b64decode(blob.md5_hash or "", validate=True).hex() or str(blob.etag or "")
    except (binascii.Error, ValueError):
        return str(blob.etag or "")


def _info(blob: gcs.Blob) -> ObjectInfo:
    return ObjectInfo(
        int(blob.size or 0),
        _ns(blob.updated),
        (blob.metadata or {}).get(DIGEST_KEY),
        blob.generation,
    )


def _bounded_retry(timeout: float) -> Retry:
    """The library's retry policy (its transient errors, its backoff), ended after
    REQUEST_ATTEMPTS attempts or REQUEST_ATTEMPTS timeouts, whichever comes first."""
    attempts = itertools.count(2)  # the predicate is asked after each failed attempt

    def again(exc: Exception) -> bool:
        return bool(DEFAULT_RETRY._predicate(exc)) and next(attempts) <= REQUEST_ATTEMPTS

    bounded: Retry = DEFAULT_RETRY.with_timeout(REQUEST_ATTEMPTS * timeout).with_predicate(again)
    return bounded


def gcs_error(exc: BaseException, path: ArtifactPath) -> ArtifactError:
    """Maps a google-cloud-storage failure onto artifactd's errors (no credentials in it)."""
    if isinstance(exc, gexc.GoogleAPICallError):
        status = int(exc.code or 0) if isinstance(exc.code, int) else 0
        detail = f"{status} {type(exc).__name__}: {exc.message}"
        return http_error(status or 503, detail, path, store="GCS bucket")
    if isinstance(exc, gexc.RetryError):
        return unreachable(exc.cause or exc, path, store="GCS bucket")
    if isinstance(exc, GoogleAuthError):
        return PermissionDenied(f"the server has no usable Google credentials: {exc}")
    return unreachable(exc, path, store="GCS bucket")
