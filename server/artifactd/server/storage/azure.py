"""Azure Blob storage: the root is `wasbs://container@account.blob.core.windows.net/prefix`.

Key layout, listings (one level at a time, `delimiter='/'`), deletes and the upload buffering
policy are shared with S3 (`object_store.py`).

Credentials, in MLflow's order: `AZURE_STORAGE_CONNECTION_STRING` (its `BlobEndpoint` wins, so
Azurite's `BlobEndpoint=http://127.0.0.1:PORT/devstoreaccount1` works; an `AccountName` there must
match the URI's account), then `AZURE_STORAGE_ACCESS_KEY` for the URI's account, then
`DefaultAzureCredential` (the optional extra `artifactd[azure-identity]`).
`MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` bounds each attempt (default 60 s); three attempts.

Uploads are block blobs: every 8 MiB is staged as a block as it fills (at most one block in
memory), and `commit_block_list` makes the file visible at commit, with the sha256 as metadata;
fail-if-exists is `If-None-Match: *` on that commit, so of two racing uploads exactly one wins.
Small files take the same path (one block), so every blob artifactd writes has a committed block
list. Abort: a blob that has no committed version is deleted (which drops its uncommitted
blocks); for an existing blob, its committed block list is committed again (guarded by its ETag,
metadata kept), which discards the aborted upload's blocks but gives the blob a new ETag and
modification time (a download pinned to the old ETag then fails with ABORTED and is retried).
Blocks nobody cleans up Azure discards after a week.

Downloads are ranged reads pinned to the ETag the entry described (`If-Match`), so an overwrite
during a download fails it (ABORTED) rather than mixing versions.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock, BlobServiceClient, ContainerClient, ExponentialRetry

from artifactd.errors import (
    Aborted,
    ArtifactError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from artifactd.paths import ArtifactPath, InvalidPath, parse
from artifactd.server.storage.base import Entry, FileReader, StorageCapabilities, Upload
from artifactd.server.storage.common import REQUEST_ATTEMPTS, already_exists, transfer_timeout
from artifactd.server.storage.object_store import (
    DIGEST_KEY,
    BufferedUpload,
    ObjectInfo,
    ObjectStoreStorage,
    http_error,
    unreachable,
)

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 * 1024 * 1024
"""Staged block size, and the most of an upload held in memory."""
DOWNLOAD_CHUNK = 4 * 1024 * 1024
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_T = TypeVar("_T")


class AzureBlobStorage(ObjectStoreStorage):
    """An artifact root under `wasbs://container@account.blob.core.windows.net/prefix`."""

    name = "azure"
    capabilities = StorageCapabilities(range_reads=True, multipart_upload=False)

    def __init__(self, destination: str, *, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._container_name, self._account, self._host, prefix = _parse_destination(destination)
        super().__init__(prefix)
        self.timeout = transfer_timeout(env)
        self._service = _make_client(env, self._account, self._host, self.timeout)
        self.container: ContainerClient = self._service.get_container_client(self._container_name)

    @property
    def uri(self) -> str:
        base = f"wasbs://{self._container_name}@{self._host}"
        return f"{base}/{self._prefix}" if self._prefix else base

    def call(self, path: ArtifactPath, fn: Callable[[], _T]) -> _T:
        try:
            return fn()
        except AzureError as exc:
            raise azure_error(exc, path, self._container_name) from None

    def _timeout(self) -> int:
        return max(1, int(self.timeout))

    # -- the object-store primitives --------------------------------------------------------

    def _head_key(self, key: str, path: ArtifactPath) -> ObjectInfo | None:
        blob = self.container.get_blob_client(key)
        try:
            return _info(blob.get_blob_properties(timeout=self._timeout()))
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise azure_error(exc, path, self._container_name) from None

    def _any_below(self, prefix: str, path: ArtifactPath) -> bool:
        def first() -> bool:
            blobs = self.container.list_blobs(
                name_starts_with=prefix, results_per_page=1, timeout=self._timeout()
            )
            return any(True for _ in blobs.by_page().__next__())

        try:
            return self.call(path, first)
        except StopIteration:
            return False

    def _list_level(
        self, prefix: str, start_after: str | None, path: ArtifactPath
    ) -> Iterator[tuple[str, ObjectInfo | None]]:
        items = self.container.walk_blobs(
            name_starts_with=prefix, delimiter="/", timeout=self._timeout()
        )
        iterator = iter(items)
        while True:
            item = self.call(path, lambda: next(iterator, None))
            if item is None:
                return
            name = str(item.name)[len(prefix) :]
            if name.endswith("/"):
                yield name[:-1], None
            else:
                yield name, _info(item)

    def _delete_key(self, key: str, path: ArtifactPath) -> None:
        blob = self.container.get_blob_client(key)
        try:
            blob.delete_blob(delete_snapshots="include", timeout=self._timeout())
        except ResourceNotFoundError:
            pass
        except AzureError as exc:
            raise azure_error(exc, path, self._container_name) from None

    def _delete_below(self, prefix: str, path: ArtifactPath) -> bool:
        names = self.call(
            path,
            lambda: [
                str(b.name)
                for b in self.container.list_blobs(name_starts_with=prefix, timeout=self._timeout())
            ],
        )
        for name in names:
            self._delete_key(name, path)
        return bool(names)

    def _reader(self, entry: Entry, info: ObjectInfo) -> FileReader:
        return _AzureReader(self, entry, str(info.version))

    def _upload(self, path: ArtifactPath) -> Upload:
        return _AzureUpload(self, path)

    def close(self) -> None:
        self.container.close()
        self._service.close()


class _AzureUpload(BufferedUpload):
    def __init__(self, storage: AzureBlobStorage, path: ArtifactPath) -> None:
        super().__init__(path, BLOCK_SIZE)
        self._storage = storage
        self._blob = storage.container.get_blob_client(storage.key(path))
        self._tag = uuid.uuid4().hex
        self._blocks: list[BlobBlock] = []

    def _send_part(self, data: bytes) -> None:
        raw = f"{self._tag}-{len(self._blocks):06d}".encode()
        block_id = base64.b64encode(raw).decode()
        self._blocks.append(BlobBlock(block_id))  # first: a failed request may have landed
        self._storage.call(
            self._path,
            lambda: self._blob.stage_block(
                block_id, data, length=len(data), timeout=self._storage._timeout()
            ),
        )

    def _put_whole(self, data: bytes, sha256: str, overwrite: bool) -> None:
        if data:
            self._send_part(data)
        self._finish_parts(sha256, overwrite)

    def _finish_parts(self, sha256: str, overwrite: bool) -> None:
        condition: dict[str, Any] = (
            {} if overwrite else {"match_condition": MatchConditions.IfMissing}
        )

        def commit() -> object:
            try:
                return self._blob.commit_block_list(
                    self._blocks,
                    metadata={DIGEST_KEY: sha256},
                    timeout=self._storage._timeout(),
                    **condition,
                )
            except (ResourceExistsError, HttpResponseError) as exc:
                if not overwrite and exc.status_code in (409, 412):
                    raise already_exists(self._path) from None
                raise

        self._storage.call(self._path, commit)
        self._blocks = []

    def _discard(self) -> None:
        if not self._blocks:
            return
        self._blocks = []
        try:
            props = self._blob.get_blob_properties(timeout=self._storage._timeout())
        except ResourceNotFoundError:
            with contextlib.suppress(AzureError):  # only uncommitted blocks: deleting drops them
                self._blob.delete_blob(timeout=self._storage._timeout())
            return
        except AzureError as exc:
            log.warning("could not discard the blocks of '%s': %s", self._path, _detail(exc))
            return
        try:
            committed, _ = self._blob.get_block_list("committed", timeout=self._storage._timeout())
            if not committed and props.size:
                return  # written outside artifactd with Put Blob: Azure drops the blocks later
            self._blob.commit_block_list(
                [BlobBlock(b.id) for b in committed],
                metadata=props.metadata,
                content_settings=props.content_settings,
                etag=props.etag,
                match_condition=MatchConditions.IfNotModified,
                timeout=self._storage._timeout(),
            )
        except AzureError as exc:  # replaced meanwhile (its commit dropped the blocks), or down
            log.info("left the staged blocks of '%s' to Azure: %s", self._path, _detail(exc))


class _AzureReader(FileReader):
    def __init__(self, storage: AzureBlobStorage, entry: Entry, etag: str) -> None:
        self._storage = storage
        self._etag = etag
        self.entry = entry

    def chunks(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        path, size = self.entry.path, self.entry.size
        end = size if limit == 0 else min(size, offset + limit)
        if offset >= end:
            return
        storage = self._storage
        blob = storage.container.get_blob_client(storage.key(path))
        position = offset
        try:
            downloader = blob.download_blob(
                offset=offset,
                length=end - offset,
                etag=self._etag,
                match_condition=MatchConditions.IfNotModified,
                timeout=storage._timeout(),
            )
            for data in downloader.chunks():
                position += len(data)
                for start in range(0, len(data), chunk_size):
                    yield data[start : start + chunk_size]
        except HttpResponseError as exc:
            if exc.status_code == 412:
                raise Aborted(
                    f"'{path}' was replaced while being read; download it again"
                ) from None
            raise azure_error(exc, path, storage._container_name) from None
        except AzureError as exc:
            raise azure_error(exc, path, storage._container_name) from None
        if position != end:
            raise DataLoss(
                f"'{path}': the object store sent {position - offset} of {end - offset} bytes"
            )

    def close(self) -> None:
        pass


# -- configuration -------------------------------------------------------------------------


def _parse_destination(destination: str) -> tuple[str, str, str, str]:
    """(container, account, host, prefix) of `wasbs://container@account.blob.core.windows.net/p`."""
    parts = urlsplit(destination)
    if parts.scheme.lower() != "wasbs":
        raise InvalidArgument(f"{destination!r} is not a wasbs:// URI")
    if parts.query or parts.fragment or "?" in destination or "#" in destination:
        raise InvalidArgument(f"Azure destination {destination!r} may not have a query or fragment")
    container, _, host = parts.netloc.partition("@")
    account = host.split(".", 1)[0]
    if not host or parts.password is not None or ":" in host:
        raise InvalidArgument(
            f"Azure destination {destination!r} must be "
            "wasbs://container@account.blob.core.windows.net/prefix"
        )
    if not _CONTAINER.match(container):
        raise InvalidArgument(
            f"Azure destination {destination!r}: {container!r} is not a valid container name "
            "(3-63 lower-case letters, digits and single '-')"
        )
    if not _ACCOUNT.match(account):
        raise InvalidArgument(
            f"Azure destination {destination!r}: {account!r} is not a valid storage account name"
        )
    prefix = parts.path.strip("/")
    if prefix:
        try:
            parse(prefix, what="Azure blob prefix")
        except InvalidPath as exc:
            raise InvalidArgument(f"Azure destination {destination!r}: {exc.message}") from None
    return container, account, host, prefix


def _make_client(env: dict[str, str], account: str, host: str, timeout: float) -> BlobServiceClient:
    options: dict[str, Any] = {
        "connection_timeout": timeout,
        "read_timeout": timeout,
        # The default (10 tries, backoff from 15 s) keeps an RPC waiting on a dead endpoint
        # for minutes; botocore's 3 tries with short backoff answer UNAVAILABLE within seconds.
        "retry_policy": ExponentialRetry(
            initial_backoff=1, increment_base=2, retry_total=REQUEST_ATTEMPTS - 1
        ),
        "max_single_get_size": DOWNLOAD_CHUNK,
        "max_chunk_get_size": DOWNLOAD_CHUNK,
    }
    connection = env.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        named = re.search(r"(?:^|;)\s*AccountName=([^;]*)", connection)
        if named and named.group(1).strip() != account:
            raise InvalidArgument(
                f"AZURE_STORAGE_CONNECTION_STRING is for account {named.group(1).strip()!r}, "
                f"but the artifacts destination names account {account!r}"
            )
        try:
            return BlobServiceClient.from_connection_string(connection, **options)
        except ValueError:
            raise InvalidArgument(
                "AZURE_STORAGE_CONNECTION_STRING is not a valid connection string"
            ) from None
    url = f"https://{host}"
    key = env.get("AZURE_STORAGE_ACCESS_KEY")
    if key:
        return BlobServiceClient(
            url, credential={"account_name": account, "account_key": key}, **options
        )
    try:
        from azure.identity import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
            DefaultAzureCredential,
        )
    except ImportError:
        raise InvalidArgument(
            "Azure destination without AZURE_STORAGE_CONNECTION_STRING or "
            "AZURE_STORAGE_ACCESS_KEY needs azure-identity for DefaultAzureCredential: "
            "pip install 'artifactd[azure-identity]'"
        ) from None
    return BlobServiceClient(url, credential=DefaultAzureCredential(), **options)


# -- helpers -------------------------------------------------------------------------------


def _ns(moment: datetime | None) -> int:
    return 0 if moment is None else int(moment.timestamp() * 1_000_000) * 1000


def _info(props: Any) -> ObjectInfo:
    return ObjectInfo(
        int(props.size or 0),
        _ns(props.last_modified),
        (props.metadata or {}).get(DIGEST_KEY),
        props.etag,
    )


def _detail(exc: AzureError) -> str:
    if isinstance(exc, HttpResponseError):
        code = getattr(exc, "error_code", None) or getattr(exc, "reason", "") or ""
        return f"{exc.status_code} {code}".strip()
    return type(exc).__name__


def azure_error(exc: AzureError, path: ArtifactPath, container: str) -> ArtifactError:
    """Maps an Azure SDK failure onto artifactd's errors (status and error code only: no keys)."""
    if isinstance(exc, HttpResponseError) and exc.status_code:
        if getattr(exc, "error_code", None) == "ContainerNotFound":
            return FailedPrecondition(f"the container {container!r} does not exist")
        return http_error(int(exc.status_code), _detail(exc), path, store="Azure container")
    if isinstance(exc, ClientAuthenticationError):
        return PermissionDenied(f"the server has no usable Azure credentials ({_detail(exc)})")
    return unreachable(exc, path, store="Azure container")
