"""Azure Blob storage: the root is `wasbs://container@account.blob.core.windows.net/prefix`.

Key layout, listings (one level at a time, `delimiter='/'`), deletes and the upload buffering
policy are shared with S3 (`object_store.py`).

Credentials, in MLflow's order: `AZURE_STORAGE_CONNECTION_STRING` (its `BlobEndpoint` wins, so
Azurite's `BlobEndpoint=http://127.0.0.1:PORT/devstoreaccount1` works; an `AccountName` there must
match the URI's account), then `AZURE_STORAGE_ACCESS_KEY` for the URI's account, then
`DefaultAzureCredential` (the optional extra `artifactd-server[azure-identity]`).
`MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` bounds each attempt (default 60 s); three attempts.

Uploads are block blobs: every 8 MiB is staged as a block as it fills (at most one block in
memory), and `commit_block_list` makes the file visible at commit, with the sha256 as metadata;
fail-if-exists is `If-None-Match: *` on that commit, so of two racing uploads exactly one wins.
Small files take the same path (one block), so every blob artifactd writes has a committed block
list. Abort: a blob that has no committed version is deleted (which drops its uncommitted
blocks); for an existing blob, its committed block list is committed again (guarded by its ETag,
metadata kept), which discards the aborted upload's blocks but gives the blob a new ETag and
modification time (a download pinned to the old ETag then fails with ABORTED and is retried).
A file over one block is recorded for the sweeper (`on_cleanup_handle`), so blocks its abort
could not drop (Azure unreachable, or the server killed) are dropped by any replica's sweeper
within `--streamed-upload-ttl` where `abort_multipart` may (a blob with no committed version);
others go with the blob's next commit, or Azure discards them after a week.

Downloads are ranged reads pinned to the ETag the entry described (`If-Match`), so an overwrite
during a download fails it (ABORTED) rather than mixing versions.

Direct transfers (`DirectTransfers`) need an account key (from the connection string or
`AZURE_STORAGE_ACCESS_KEY`) to sign service SAS URLs; with `DefaultAzureCredential` they are not
offered (user-delegation SAS is not implemented). Azure has no upload object: the backend upload id
is a random block-id prefix, and part n is the block `_block_id(upload_id, n)`, staged by the client
with Put Block against the final blob name (uncommitted, so invisible) and published by
`complete_multipart` with Put Block List. A part's "ETag" is its block id as sent on the wire (the
`blockid` query parameter of the part URL, URL-decoded): Put Block answers with no ETag. An
account-key SAS cannot be bound to one operation or query parameter, so a part URL allows any write
of that blob (Put Blob, Put Block List) until it expires, and a download URL serves whatever version
is there unless the client sends the `If-Match` it is given.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
    generate_blob_sas,
)

from artifactd.protocol.errors import (
    Aborted,
    ArtifactError,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
)
from artifactd.protocol.paths import ArtifactPath, InvalidPath, parse
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
    unreachable,
)

log = logging.getLogger(__name__)

BLOCK_SIZE = 8 * 1024 * 1024
"""Staged block size, and the most of an upload held in memory."""
DOWNLOAD_CHUNK = 4 * 1024 * 1024
_CONTAINER = re.compile(r"^[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
_MAX_PARTS = 50_000
_T = TypeVar("_T")


class AzureBlobStorage(ObjectStoreStorage, DirectTransfers):
    """An artifact root under `wasbs://container@account.blob.core.windows.net/prefix`."""

    name = "azure"
    part_limits = PartLimits(min_size=1, max_size=4000 * 1024 * 1024, max_parts=_MAX_PARTS)

    def __init__(self, destination: str, *, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._container_name, self._account, self._host, prefix = _parse_destination(destination)
        super().__init__(prefix)
        self.timeout = transfer_timeout(env)
        self._service = _make_client(env, self._account, self._host, self.timeout)
        self.container: ContainerClient = self._service.get_container_client(self._container_name)
        self._signing_key = _account_key(self._service)
        signs = self._signing_key is not None
        self.capabilities = StorageCapabilities(
            range_reads=True, multipart_upload=signs, presigned_urls=signs
        )

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

    def commit_blocks(
        self,
        path: ArtifactPath,
        blob: BlobClient,
        blocks: list[BlobBlock],
        sha256: str | None,
        overwrite: bool,
    ) -> None:
        """Put Block List: `blocks` become the blob, atomically, with the digest as metadata.

        Without `overwrite`, `If-None-Match: *` makes it fail with `AlreadyExists` if a blob is
        there by then. Uncommitted blocks of the blob that are not listed are discarded by Azure.
        """
        condition: dict[str, Any] = (
            {} if overwrite else {"match_condition": MatchConditions.IfMissing}
        )

        def commit() -> object:
            try:
                return blob.commit_block_list(
                    blocks,
                    metadata={DIGEST_KEY: sha256} if sha256 else None,
                    timeout=self._timeout(),
                    **condition,
                )
            except (ResourceExistsError, HttpResponseError) as exc:
                if not overwrite and exc.status_code in (409, 412):
                    raise already_exists(path) from None
                raise

        self.call(path, commit)

    # -- direct transfers (SAS URLs) --------------------------------------------------------

    def direct_upload_refusal(self) -> str | None:
        if self._signing_key is not None:
            return None
        return (
            "the server has no Azure account key (AZURE_STORAGE_CONNECTION_STRING with an "
            "AccountKey, or AZURE_STORAGE_ACCESS_KEY) to sign SAS URLs with; signing with "
            "DefaultAzureCredential (user-delegation SAS) is not supported"
        )

    def _sas(
        self, path: ArtifactPath, permission: BlobSasPermissions, ttl: float
    ) -> tuple[BlobClient, str, float]:
        """(blob client, SAS query string, expiry in epoch seconds) for the blob of `path`."""
        if self._signing_key is None:
            raise FailedPrecondition(self.direct_upload_refusal() or "no Azure account key")
        account, key = self._signing_key
        blob = self.container.get_blob_client(self.key(path))
        expires = int(time.time() + max(1.0, ttl))  # a SAS expiry has whole seconds
        sas = generate_blob_sas(
            account,
            self._container_name,
            self.key(path),
            account_key=key,
            permission=permission,
            expiry=datetime.fromtimestamp(expires, UTC),
            protocol="https" if blob.url.startswith("https:") else None,
        )
        return blob, sas, float(expires)

    def _check_upload(self, upload_id: str, number: int | None = None) -> None:
        if not _UPLOAD_ID.match(upload_id):
            raise InvalidArgument(f"{upload_id!r} is not an Azure multipart upload id")
        if number is not None and not 1 <= number <= _MAX_PARTS:
            raise InvalidArgument(f"part numbers are 1..{_MAX_PARTS}, not {number}")

    def create_multipart(self, path: ArtifactPath, *, size: int, sha256: str | None) -> str:
        """A new block-id prefix: Azure has nothing to create (blocks are staged against the
        blob itself and stay invisible until committed); the digest is given again at completion."""
        refusal = self.direct_upload_refusal()
        if refusal is not None:
            raise FailedPrecondition(refusal)
        self.check_writable(path)
        return uuid.uuid4().hex

    def presign_part(
        self, path: ArtifactPath, upload_id: str, number: int, size: int, ttl: float
    ) -> PresignedRequest:
        """A Put Block of block `_wire_block_id(upload_id, number)`, signed with a write SAS.

        The SAS cannot bind the size, the operation nor the block id: `complete_multipart`'s
        caller checks sizes against `list_parts`. No headers are needed (the SAS's `sv` sets the
        API version).
        """
        self._check_upload(upload_id, number)
        blob, sas, expires = self._sas(path, BlobSasPermissions(write=True), ttl)
        block = quote(_wire_block_id(upload_id, number), safe="")
        url = f"{blob.url}?{sas}&comp=block&blockid={block}"
        return PresignedRequest(url, "PUT", {}, expires)

    def list_parts(self, path: ArtifactPath, upload_id: str) -> list[StoredPart]:
        """The uncommitted blocks of this upload; `StoredPart.etag` is the block id as the part URL
        sends it (its `blockid` query parameter, URL-decoded), since Put Block returns no ETag.

        Azure keeps no upload object, so an upload whose blocks are gone (completed, aborted,
        expired after 7 days, or discarded by another commit to the blob) lists no parts rather
        than raising `NotFound`.
        """
        self._check_upload(upload_id)
        blob = self.container.get_blob_client(self.key(path))
        try:
            _, uncommitted = blob.get_block_list("uncommitted", timeout=self._timeout())
        except ResourceNotFoundError as exc:
            if getattr(exc, "error_code", None) == "ContainerNotFound":
                raise azure_error(exc, path, self._container_name) from None
            return []
        except AzureError as exc:
            raise azure_error(exc, path, self._container_name) from None
        parts = []
        for block in uncommitted:
            number = _part_number(str(block.id), upload_id)
            if number is not None:
                parts.append(StoredPart(number, _wire_block_id(upload_id, number), block.size))
        return sorted(parts, key=lambda p: p.number)

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
        """Put Block List of the parts' blocks, in order (`If-None-Match: *` without overwrite).

        Each part's etag must be its block id (as `list_parts` reports it).
        """
        self._check_upload(upload_id)
        blocks = []
        for part in parts:
            self._check_upload(upload_id, part.number)
            if part.etag != _wire_block_id(upload_id, part.number):
                raise FailedPrecondition(
                    f"part {part.number} of '{path}' is not a block of this upload"
                )
            blocks.append(BlobBlock(_block_id(upload_id, part.number)))
        blob = self.container.get_blob_client(self.key(path))
        self.commit_blocks(path, blob, blocks, sha256, overwrite)
        return self.stat_file(path)[0]

    def abort_multipart(self, path: ArtifactPath, upload_id: str) -> None:
        """Drops the upload's blocks where that is safe; otherwise Azure drops them.

        Azure cannot delete single uncommitted blocks. When no committed blob exists and every
        uncommitted block is this upload's, the blob is deleted (which removes its uncommitted
        blocks; `If-None-Match: *` guards against a blob committed meanwhile, which Azurite does
        not enforce). Otherwise the blocks are left: they are invisible, the next commit of the
        blob discards them, and Azure deletes them after 7 days. Nothing is ever committed here
        (an empty block list would create a visible empty blob) and a committed blob is never
        touched.
        """
        if not _UPLOAD_ID.match(upload_id):
            return
        if self._head(path) is not None:
            return
        blob = self.container.get_blob_client(self.key(path))
        try:
            _, uncommitted = blob.get_block_list("uncommitted", timeout=self._timeout())
        except ResourceNotFoundError:
            return
        except AzureError as exc:
            raise azure_error(exc, path, self._container_name) from None
        ours = [b for b in uncommitted if _part_number(str(b.id), upload_id) is not None]
        if not ours or len(ours) != len(uncommitted):
            return  # nothing of ours, or another upload's blocks too: leave them to Azure
        try:
            blob.delete_blob(match_condition=MatchConditions.IfMissing, timeout=self._timeout())
        except (ResourceNotFoundError, ResourceExistsError):
            pass
        except HttpResponseError as exc:
            if exc.status_code != 412:
                raise azure_error(exc, path, self._container_name) from None
        except AzureError as exc:
            raise azure_error(exc, path, self._container_name) from None

    def discard_leftover(self, path: ArtifactPath, handle: str) -> None:
        """Drops the blocks of a file streamed to `path` whose upload could not (its tag was
        reported by `_AzureUpload.on_cleanup_handle`), as for an abandoned direct upload."""
        self.abort_multipart(path, handle)

    def presign_download(self, path: ArtifactPath, ttl: float) -> tuple[Entry, PresignedRequest]:
        """A GET with a read SAS and `If-Match: <ETag>`: an account-key SAS cannot pin a version,
        so the header does (Azure answers 412 if the blob was replaced), if the client sends it."""
        entry, info = self.stat_file(path)
        blob, sas, expires = self._sas(path, BlobSasPermissions(read=True), ttl)
        return entry, PresignedRequest(
            f"{blob.url}?{sas}", "GET", {"If-Match": str(info.version)}, expires
        )


class _AzureUpload(BufferedUpload):
    def __init__(self, storage: AzureBlobStorage, path: ArtifactPath) -> None:
        super().__init__(path, BLOCK_SIZE)
        self._storage = storage
        self._blob = storage.container.get_blob_client(storage.key(path))
        self._tag = uuid.uuid4().hex
        self._blocks: list[BlobBlock] = []
        self._report: Callable[[str | None], None] | None = None
        self._reported = False

    def on_cleanup_handle(self, report: Callable[[str | None], None]) -> None:
        """Reports the tag naming this upload's blocks before the first of a file over one
        block is staged, and None once they are committed or dropped: blocks an abort could
        not drop (Azure unreachable, or this server killed) are then dropped by a sweeper
        (`AzureBlobStorage.discard_leftover`) instead of staying for Azure's week."""
        self._report = report

    def _send_part(self, data: bytes) -> None:
        if self._report is not None and not self._reported:
            self._reported = True
            self._report(self._tag)  # raising: the caller's abort discards what there is
        self._stage(data)

    def _stage(self, data: bytes) -> None:
        block_id = _block_id(self._tag, len(self._blocks))
        self._blocks.append(BlobBlock(block_id))  # first: a failed request may have landed
        self._storage.call(
            self._path,
            lambda: self._blob.stage_block(
                block_id, data, length=len(data), timeout=self._storage._timeout()
            ),
        )

    def _put_whole(self, data: bytes, sha256: str, overwrite: bool) -> None:
        if data:
            self._stage(data)  # one block, committed at once: not worth a record
        self._finish_parts(sha256, overwrite)

    def _finish_parts(self, sha256: str, overwrite: bool) -> None:
        self._storage.commit_blocks(self._path, self._blob, self._blocks, sha256, overwrite)
        self._blocks = []
        self._gone()

    def _gone(self) -> None:
        if self._reported and self._report is not None:
            self._reported = False
            self._report(None)

    def _discard(self) -> None:
        if not self._blocks:
            return
        self._blocks = []
        if self._drop_blocks():
            self._gone()

    def _drop_blocks(self) -> bool:
        """Drops the staged blocks; whether nothing is left for a sweeper to do (False: Azure
        was unreachable, and the record of the upload stays). A recorded upload tries each
        request once: the sweeper retries later, and a failed upload's answer to its client
        does not wait out another round of retries against a store that just failed it."""
        timeout = self._storage._timeout()
        once: dict[str, Any] = {"retry_total": 0} if self._reported else {}
        try:
            props = self._blob.get_blob_properties(timeout=timeout, **once)
        except ResourceNotFoundError:
            try:  # only uncommitted blocks: deleting drops them
                self._blob.delete_blob(timeout=timeout, **once)
            except ResourceNotFoundError:
                pass
            except AzureError as exc:
                log.warning("could not discard the blocks of '%s': %s", self._path, _detail(exc))
                return isinstance(exc, HttpResponseError)
            return True
        except AzureError as exc:
            log.warning("could not discard the blocks of '%s': %s", self._path, _detail(exc))
            return isinstance(exc, HttpResponseError)
        try:
            committed, _ = self._blob.get_block_list("committed", timeout=timeout, **once)
            if not committed and props.size:
                return True  # written outside artifactd with Put Blob: Azure drops the blocks
            self._blob.commit_block_list(
                [BlobBlock(b.id) for b in committed],
                metadata=props.metadata,
                content_settings=props.content_settings,
                etag=props.etag,
                match_condition=MatchConditions.IfNotModified,
                timeout=timeout,
                **once,
            )
        except AzureError as exc:  # replaced meanwhile (its commit dropped the blocks), or down
            log.info("left the staged blocks of '%s' to Azure: %s", self._path, _detail(exc))
            return isinstance(exc, HttpResponseError)
        return True


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
        # Waits of 3 and 5 s, ±1 s (the default jitter, ±3 s, made a refused request take up
        # to 14 s).
        "retry_policy": ExponentialRetry(
            initial_backoff=1,
            increment_base=2,
            retry_total=REQUEST_ATTEMPTS - 1,
            random_jitter_range=1,
        ),
        "max_single_get_size": DOWNLOAD_CHUNK,
        "max_chunk_get_size": DOWNLOAD_CHUNK,
    }
    connection = settings.AZURE_CONNECTION_STRING.get(env)
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
    key = settings.AZURE_ACCESS_KEY.get(env)
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
            "pip install 'artifactd-server[azure-identity]'"
        ) from None
    return BlobServiceClient(url, credential=DefaultAzureCredential(), **options)


def _account_key(service: BlobServiceClient) -> tuple[str, str] | None:
    """(account name, account key) when the client signs with a shared key, else None."""
    credential = service.credential
    name = getattr(credential, "account_name", None)
    key = getattr(credential, "account_key", None)
    if isinstance(name, str) and isinstance(key, str) and name and key:
        return name, key
    return None


# -- helpers -------------------------------------------------------------------------------


def _block_id(tag: str, number: int) -> str:
    """The block id (as the SDK takes it) of block `number` of the upload `tag`.

    Every id has the same length (Azure refuses blocks of a blob whose ids differ in length), for
    streamed and direct uploads alike; the SDK base64-encodes it once more on the wire.
    """
    return base64.b64encode(f"{tag}-{number:06d}".encode()).decode()


def _wire_block_id(tag: str, number: int) -> str:
    """The block id as the REST API sees it (the `blockid` query parameter, before quoting)."""
    return base64.b64encode(_block_id(tag, number).encode()).decode()


def _part_number(block_id: str, tag: str) -> int | None:
    """The number of a block (id as the SDK lists it) if it belongs to the upload `tag`."""
    try:
        raw = base64.b64decode(block_id, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    name, _, number = raw.rpartition("-")
    if name != tag or len(number) != 6 or not number.isdigit():
        return None
    return int(number)


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
