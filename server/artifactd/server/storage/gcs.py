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
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError, GoogleAuthError
from google.cloud import storage as gcs
from google.cloud.storage.retry import DEFAULT_RETRY

from artifactd.errors import (
    Aborted,
    ArtifactError,
    DataLoss,
    InvalidArgument,
    PermissionDenied,
)
from artifactd.paths import RESERVED_PREFIX, ROOT, ArtifactPath
from artifactd.server.storage.base import Entry, FileReader, StorageCapabilities, Upload
from artifactd.server.storage.common import REQUEST_ATTEMPTS, already_exists, transfer_timeout
from artifactd.server.storage.object_store import (
    DIGEST_KEY,
    BufferedUpload,
    ObjectInfo,
    ObjectStoreStorage,
    http_error,
    parse_bucket_destination,
    unreachable,
)

log = logging.getLogger(__name__)

CHUNK_QUANTUM = 256 * 1024
DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024
MAX_COMPOSE = 32
UPLOAD_PREFIX = f"{RESERVED_PREFIX}upload-"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_T = TypeVar("_T")


class GCSStorage(ObjectStoreStorage):
    """An artifact root under `gs://bucket/prefix`."""

    name = "gcs"
    capabilities = StorageCapabilities(range_reads=True, multipart_upload=False)

    def __init__(self, destination: str, *, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._bucket_name, prefix = _parse_destination(destination)
        super().__init__(prefix)
        self.upload_chunk = _chunk_size(env, "MLFLOW_GCS_UPLOAD_CHUNK_SIZE")
        self.download_chunk = _chunk_size(env, "MLFLOW_GCS_DOWNLOAD_CHUNK_SIZE")
        timeout = transfer_timeout(env)
        # Each attempt waits at most `timeout`; retries stop after REQUEST_ATTEMPTS times that
        # (the library's default retries a server that does not answer for two minutes).
        self.request: dict[str, Any] = {
            "timeout": timeout,
            "retry": DEFAULT_RETRY.with_timeout(REQUEST_ATTEMPTS * timeout),
        }
        self._client = _make_client(env)
        self.bucket = self._client.bucket(self._bucket_name)

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

    def sweep_incomplete_uploads(self, older_than: float) -> int:
        """Deletes chunk objects (`.artifactd-upload-*`) older than `older_than` seconds."""
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


class _GCSUpload(BufferedUpload):
    def __init__(self, storage: GCSStorage, path: ArtifactPath) -> None:
        super().__init__(path, storage.upload_chunk)
        self._storage = storage
        self._key = storage.key(path)
        directory, _, _ = self._key.rpartition("/")
        self._temp = f"{directory}/" if directory else ""
        self._temp += f"{UPLOAD_PREFIX}{uuid.uuid4().hex}"
        self._parts: list[str] = []
        self._counter = 0

    def _new_part_name(self) -> str:
        self._counter += 1
        return f"{self._temp}-{self._counter}"

    def _send_part(self, data: bytes) -> None:
        storage = self._storage
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
        storage = self._storage
        name = self._new_part_name()
        target = storage.bucket.blob(name)
        sources = [storage.bucket.blob(n) for n in self._parts]
        storage.call(self._path, lambda: target.compose(sources, **storage.request))
        old, self._parts = self._parts, [name]
        for part in old:
            storage._delete_key(part, self._path)

    def _final_blob(self, sha256: str, overwrite: bool) -> gcs.Blob:
        blob = self._storage.bucket.blob(self._key)
        blob.metadata = {DIGEST_KEY: sha256}
        if not overwrite and self._storage._head_key(self._key, self._path) is not None:
            # the precondition below is the real guard; gcp-storage-emulator ignores it
            raise already_exists(self._path)
        return blob

    def _write_final(self, write: Callable[[], object], overwrite: bool) -> None:
        def guarded() -> object:
            try:
                return write()
            except gexc.PreconditionFailed:
                if overwrite:
                    raise
                raise already_exists(self._path) from None

        self._storage.call(self._path, guarded)

    def _put_whole(self, data: bytes, sha256: str, overwrite: bool) -> None:
        blob = self._final_blob(sha256, overwrite)
        condition = None if overwrite else 0
        self._write_final(
            lambda: blob.upload_from_string(
                data,
                if_generation_match=condition,
                **self._storage.request,
                checksum="crc32c",
            ),
            overwrite,
        )

    def _finish_parts(self, sha256: str, overwrite: bool) -> None:
        storage = self._storage
        blob = self._final_blob(sha256, overwrite)
        sources = [storage.bucket.blob(n) for n in self._parts]
        condition = None if overwrite else 0
        self._write_final(
            lambda: blob.compose(sources, if_generation_match=condition, **storage.request),
            overwrite,
        )
        self._discard()

    def _discard(self) -> None:
        parts, self._parts = self._parts, []
        for name in parts:
            try:
                self._storage._delete_key(name, self._path)
            except ArtifactError as exc:  # the start-up sweep removes it later; it is hidden
                log.warning("could not delete the upload chunk %r: %s", name, exc.message)


class _GCSReader(FileReader):
    def __init__(self, storage: GCSStorage, entry: Entry, generation: Any) -> None:
        self._storage = storage
        self._generation = generation
        self.entry = entry

    def chunks(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        path, size = self.entry.path, self.entry.size
        end = size if limit == 0 else min(size, offset + limit)
        storage = self._storage
        blob = storage.bucket.blob(storage.key(path), generation=self._generation)
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


def _chunk_size(env: dict[str, str], name: str) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return DEFAULT_CHUNK_SIZE
    if not raw.isdigit() or int(raw) == 0 or int(raw) % CHUNK_QUANTUM:
        raise InvalidArgument(
            f"{name} {raw!r} must be a positive number of bytes that is a multiple of 256 KiB "
            f"({CHUNK_QUANTUM}), e.g. {DEFAULT_CHUNK_SIZE}"
        )
    return int(raw)


def _make_client(env: dict[str, str]) -> gcs.Client:
    if env.get("STORAGE_EMULATOR_HOST"):
        # the library reads the variable itself (from os.environ): keep the two in step
        os.environ.setdefault("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
        project = env.get("GOOGLE_CLOUD_PROJECT") or "artifactd"
        return gcs.Client(project=project, credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
    try:
        credentials, default_project = google.auth.default()
    except DefaultCredentialsError:
        log.info("no Google credentials found; using anonymous access to GCS")
        return gcs.Client.create_anonymous_client()
    return gcs.Client(project=default_project, credentials=credentials)


# -- helpers -------------------------------------------------------------------------------


def _ns(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1_000_000) * 1000


def _info(blob: gcs.Blob) -> ObjectInfo:
    return ObjectInfo(
        int(blob.size or 0),
        _ns(blob.updated),
        (blob.metadata or {}).get(DIGEST_KEY),
        blob.generation,
    )


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
