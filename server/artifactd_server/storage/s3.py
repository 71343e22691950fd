"""S3 and S3-compatible object stores: the artifact root is `s3://bucket/prefix`.

Paths map to keys `<prefix>/<path>`; a directory is any key prefix ending at a `/` (S3 has no
directories: one exists while some key lies below it). The key layout, listings, deletes and the
upload buffering policy are shared with the other object stores (`object_store.py`).

Configuration comes from the server's environment only, as MLflow reads it:
`MLFLOW_S3_ENDPOINT_URL` (`scheme://host[:port]`, checked at start-up: a path there would be
prepended to every key), `MLFLOW_S3_IGNORE_TLS`, `AWS_CA_BUNDLE` (botocore reads it itself),
`MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE`, `MLFLOW_EXPERIMENTAL_S3_SIGNATURE_VERSION`,
`MLFLOW_S3_UPLOAD_EXTRA_ARGS` (a JSON object of PutObject / CreateMultipartUpload parameters such
as `ServerSideEncryption`, checked at start-up), `MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT` (read
timeout per request, default 60 s), `AWS_DEFAULT_REGION` and boto3's credential chain.

Uploads: up to `PART_SIZE` bytes are buffered and stored with one PutObject at commit; a larger
file becomes a multipart upload whose parts are sent as they fill, so at most one part is held in
memory. Nothing is visible before the commit: a multipart upload is only an object once completed,
and `abort` aborts it. Its id is reported as the upload's cleanup handle (`on_cleanup_handle`), so
that if this server dies mid-stream the sweeper of another can abort it (`discard_leftover`).
Fail-if-exists uses a conditional write (`If-None-Match: *`), so of two racing uploads exactly one
wins, as with `link` on disk. The sha256 travels as object metadata
(`x-amz-meta-sha256`); a multipart upload learns it only at the end, so the completed object is
copied onto itself with the digest (guarded by its ETag); beyond S3's 5 GiB copy limit the digest is
verified on upload but not remembered.

Downloads read the version they described: the GET carries `If-Match` with the ETag of the HEAD
that produced the entry, so a concurrent overwrite fails the read instead of mixing versions.

Not atomic here, unlike on disk: the checks that a file does not replace a directory (or live
below a file) happen when the upload starts, so a racing upload can still create both `a` and
`a/b`; listings then show the directory.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    PartialCredentialsError,
)

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
from artifactd.protocol.paths import ROOT, ArtifactPath
from artifactd_server import settings
from artifactd_server.storage.base import (
    STARTING,
    DirectTransfers,
    Entry,
    FileReader,
    PartLimits,
    PresignedRequest,
    StorageCapabilities,
    StoredPart,
    Upload,
)
from artifactd_server.storage.common import already_exists, transfer_timeout
from artifactd_server.storage.object_store import (
    DIGEST_KEY,
    BufferedUpload,
    ObjectInfo,
    ObjectStoreStorage,
    http_error,
    parse_bucket_destination,
)

if TYPE_CHECKING:
    from botocore.config import _RetryDict, _S3Dict
    from mypy_boto3_s3.client import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

log = logging.getLogger(__name__)

PART_SIZE = 8 * 1024 * 1024
"""Multipart part size, and the largest file stored with a single PutObject."""
MAX_COPY_SIZE = 5 * 1024**3
"""The largest object S3 copies in one CopyObject (used to attach the digest to multipart ones)."""
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# Parameters artifactd sets itself; MLFLOW_S3_UPLOAD_EXTRA_ARGS may not override them.
_RESERVED_UPLOAD_ARGS = frozenset(
    {"Bucket", "Key", "Body", "ContentLength", "ContentMD5", "IfNoneMatch", "IfMatch", "UploadId"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AccountProblem",
    }
)
_CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}
)
"""Refusals of the server's own keys, not of a permission: only its operator can mend them."""
_RETRYABLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "InternalError",
        "503",
        "500",
    }
)


class S3Storage(ObjectStoreStorage, DirectTransfers):
    """An artifact root under `s3://bucket/prefix`."""

    name = "s3"
    part_limits = PartLimits(min_size=5 * 1024**2, max_size=5 * 1024**3, max_parts=10_000)

    def __init__(self, destination: str, *, environ: dict[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self._bucket, prefix = _parse_destination(destination)
        super().__init__(prefix)
        self._client: S3Client = _make_client(env)
        self._extra_args = _upload_extra_args(env, self._client)
        self._env = env
        self._presigner: S3Client | None = None
        direct = self.direct_upload_refusal() is None
        self.capabilities = StorageCapabilities(
            range_reads=True, multipart_upload=direct, presigned_urls=direct
        )

    @property
    def uri(self) -> str:
        return f"s3://{self._bucket}/{self._prefix}" if self._prefix else f"s3://{self._bucket}"

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def client(self) -> S3Client:
        return self._client

    # -- the object-store primitives --------------------------------------------------------

    def _head_key(self, key: str, path: ArtifactPath) -> ObjectInfo | None:
        try:
            head = self._client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _NOT_FOUND_CODES:
                return None
            raise s3_error(exc, path, self._bucket) from None
        except BotoCoreError as exc:
            raise s3_error(exc, path, self._bucket) from None
        return ObjectInfo(
            head["ContentLength"],
            _ns(head["LastModified"]),
            (head.get("Metadata") or {}).get(DIGEST_KEY),
            head["ETag"],
        )

    def _any_below(self, prefix: str, path: ArtifactPath) -> bool:
        try:
            reply = self._client.list_objects_v2(Bucket=self._bucket, Prefix=prefix, MaxKeys=1)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, path, self._bucket) from None
        return reply.get("KeyCount", 0) > 0

    def _list_level(
        self, prefix: str, start_after: str | None, path: ArtifactPath
    ) -> Iterator[tuple[str, ObjectInfo | None]]:
        kwargs: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix, "Delimiter": "/"}
        if start_after is not None and len(start_after) > len(prefix) + 1:
            # One character short of `start_after`: S3 lists the sub-prefix `<start_after>/`
            # after it, but SeaweedFS leaves out the directory named like StartAfter's last
            # segment. Names this returns before `start_after` are skipped by the walk.
            kwargs["StartAfter"] = start_after[:-1]
        try:
            for page in self._client.get_paginator("list_objects_v2").paginate(**kwargs):
                for common in page.get("CommonPrefixes", []):
                    yield common.get("Prefix", "")[len(prefix) : -1], None
                for obj in page.get("Contents", []):
                    info = ObjectInfo(obj["Size"], _ns(obj["LastModified"]))
                    yield obj["Key"][len(prefix) :], info
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, path, self._bucket) from None

    def _delete_key(self, key: str, path: ArtifactPath) -> None:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, path, self._bucket) from None

    def _delete_below(self, prefix: str, path: ArtifactPath) -> bool:
        existed = False
        folders = {prefix}
        try:
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=prefix):
                keys: list[ObjectIdentifierTypeDef] = [
                    {"Key": obj["Key"]} for obj in page.get("Contents", [])
                ]
                if not keys:
                    continue
                existed = True
                for key in keys:
                    folders.update(_folders_on_the_way(prefix, key["Key"]))
                reply = self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": keys, "Quiet": True}
                )
                errors = reply.get("Errors", [])
                if errors:
                    first = errors[0]
                    raise _client_error(
                        first.get("Code", ""),
                        0,
                        f"{len(errors)} objects not deleted, first {first.get('Key')!r}: "
                        f"{first.get('Message', '')}",
                        path,
                        self._bucket,
                    )
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, path, self._bucket) from None
        if existed:
            self._delete_folders(folders, path)
        return existed

    def _delete_folders(self, folders: set[str], path: ArtifactPath) -> None:
        """Deletes the keys `<folder>/` of a tree just emptied, deepest first.

        On S3 they are directory markers at most, already deleted with the tree, or absent (a
        no-op; in a versioned bucket, one delete marker each). Stores built on a file system,
        such as SeaweedFS, keep a real directory per folder and list an empty one as a
        CommonPrefix until a cleaner removes it minutes later; deleting its key removes it at
        once (a folder that holds anything is kept).
        """
        ordered = sorted(folders, key=lambda f: (-f.count("/"), f))
        try:
            for start in range(0, len(ordered), 1000):
                batch: list[ObjectIdentifierTypeDef] = [
                    {"Key": f} for f in ordered[start : start + 1000]
                ]
                self._client.delete_objects(
                    Bucket=self._bucket, Delete={"Objects": batch, "Quiet": True}
                )
        except (ClientError, BotoCoreError) as exc:  # the files are gone; only folders stay
            log.info("could not delete the emptied folders of '%s': %s", path, exc)

    def _reader(self, entry: Entry, info: ObjectInfo) -> FileReader:
        return _S3Reader(self, entry, str(info.version))

    def _upload(self, path: ArtifactPath) -> Upload:
        return _S3Upload(self, path)

    def discard_leftover(self, path: ArtifactPath, handle: str) -> None:
        """Aborts the multipart upload `handle` of a file streamed to `path` by a server that
        died (`_S3Upload.on_cleanup_handle` reported it)."""
        self.abort_multipart(path, handle)

    def discard_unrecorded(
        self, path: ArtifactPath, initiated_before: float, recorded: Collection[str]
    ) -> int:
        """Aborts the multipart uploads of `path`'s key that no record names and that started
        before `initiated_before`: those of a server killed between creating one and reporting
        its id (`_S3Upload._send_part` reports STARTING first). A live upload is either
        recorded or was created a moment ago, after `initiated_before` (the sweeper sets it
        halfway between the STARTING record and now, at least half a TTL back)."""
        key = self.key(path)
        removed = 0
        try:
            paginator = self._client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self._bucket, Prefix=key):
                for upload in page.get("Uploads", []):
                    if upload["Key"] != key or upload["UploadId"] in recorded:
                        continue
                    if upload["Initiated"].timestamp() + 1 >= initiated_before:
                        continue  # S3 reports whole seconds
                    self.abort_multipart(path, upload["UploadId"])
                    removed += 1
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, path, self._bucket) from None
        return removed

    def sweep_incomplete_uploads(self, older_than: float) -> int:
        """Aborts multipart uploads under the root whose last part is older than `older_than` s.

        Run at start-up with a day: the backstop for uploads nothing recorded (from before the
        records), since an upload seen here may be another live replica's. Recorded ones go
        within `--streamed-upload-ttl` (`discard_leftover`), and so do those of a server killed
        between creating one and recording its id (`discard_unrecorded`)."""
        cutoff = time.time() - older_than
        removed = 0
        paginator = self._client.get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self._bucket, Prefix=self.dir_prefix(ROOT)):
                for upload in page.get("Uploads", []):
                    key, upload_id = upload["Key"], upload["UploadId"]
                    if upload["Initiated"].timestamp() >= cutoff:
                        continue
                    try:
                        if self._last_part_time(key, upload_id) >= cutoff:
                            continue  # still being written
                        self._client.abort_multipart_upload(
                            Bucket=self._bucket, Key=key, UploadId=upload_id
                        )
                    except ClientError as exc:
                        if _code(exc) != "NoSuchUpload":
                            raise
                        continue  # completed or aborted meanwhile
                    removed += 1
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, ROOT, self._bucket) from None
        return removed

    def _last_part_time(self, key: str, upload_id: str) -> float:
        latest = 0.0
        paginator = self._client.get_paginator("list_parts")
        for page in paginator.paginate(Bucket=self._bucket, Key=key, UploadId=upload_id):
            for part in page.get("Parts", []):
                latest = max(latest, part["LastModified"].timestamp())
        return latest

    def close(self) -> None:
        self._client.close()
        if self._presigner is not None:
            self._presigner.close()

    # -- direct transfers (presigned) -------------------------------------------------------

    def direct_upload_refusal(self) -> str | None:
        if settings.S3_SIGNATURE_VERSION.get(self._env) == "unsigned":
            return "the server uses unsigned S3 requests, so it cannot presign URLs"
        if any(name.startswith("SSECustomer") for name in self._extra_args):
            return (
                "MLFLOW_S3_UPLOAD_EXTRA_ARGS uses a customer-provided key (SSE-C), which every "
                "part upload would have to carry: the server does not hand it to clients"
            )
        return None

    def _signing_client(self) -> S3Client:
        """A client for presigning in the bucket's own region: a URL signed for another region
        is refused by S3 (the server's client may have been made for AWS_DEFAULT_REGION)."""
        if self._presigner is None:
            region = self._client.meta.region_name
            try:
                head = self._client.head_bucket(Bucket=self._bucket)
                region = head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region", region)
            except (ClientError, BotoCoreError) as exc:
                raise s3_error(exc, ROOT, self._bucket) from None
            if region == self._client.meta.region_name:
                self._presigner = self._client
            else:
                self._presigner = _make_client({**self._env, settings.S3_REGION.name: region})
        return self._presigner

    def _presign(self, operation: str, params: dict[str, Any], ttl: float) -> PresignedRequest:
        expires = max(1, int(ttl))
        try:
            url = self._signing_client().generate_presigned_url(
                operation, Params=params, ExpiresIn=expires
            )
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, ROOT, self._bucket) from None
        method = "PUT" if operation == "upload_part" else "GET"
        return PresignedRequest(url, method, {}, time.time() + expires)

    def create_multipart(self, path: ArtifactPath, *, size: int, sha256: str | None) -> str:
        self.check_writable(path)
        extra = dict(self._extra_args)
        if sha256:
            extra["Metadata"] = {**extra.get("Metadata", {}), DIGEST_KEY: sha256}
        try:
            reply = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self.key(path), **extra
            )
        except (ClientError, BotoCoreError) as exc:
            raise s3_error(exc, path, self._bucket) from None
        return reply["UploadId"]

    def presign_part(
        self, path: ArtifactPath, upload_id: str, number: int, size: int, ttl: float
    ) -> PresignedRequest:
        params = {
            "Bucket": self._bucket, "Key": self.key(path), "UploadId": upload_id,
            "PartNumber": number,
        }  # fmt: skip
        return self._presign("upload_part", params, ttl)

    def list_parts(self, path: ArtifactPath, upload_id: str) -> list[StoredPart]:
        parts: list[StoredPart] = []
        paginator = self._client.get_paginator("list_parts")
        try:
            for page in paginator.paginate(
                Bucket=self._bucket, Key=self.key(path), UploadId=upload_id
            ):
                parts.extend(
                    StoredPart(p["PartNumber"], p["ETag"], p["Size"]) for p in page.get("Parts", [])
                )
        except ClientError as exc:
            if _code(exc) == "NoSuchUpload":
                raise NotFound(f"the multipart upload of '{path}' is gone from storage") from None
            raise s3_error(exc, path, self._bucket) from None
        except BotoCoreError as exc:
            raise s3_error(exc, path, self._bucket) from None
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
        listed: list[CompletedPartTypeDef] = [
            {"PartNumber": p.number, "ETag": p.etag} for p in parts
        ]
        conditional_write(
            lambda condition: self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self.key(path), UploadId=upload_id,
                MultipartUpload={"Parts": listed}, **condition,
            ),
            overwrite, path, self._bucket,
        )  # fmt: skip
        return self.stat_file(path)[0]

    def abort_multipart(self, path: ArtifactPath, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self.key(path), UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) not in ("NoSuchUpload", *_NOT_FOUND_CODES):
                raise s3_error(exc, path, self._bucket) from None
        except BotoCoreError as exc:
            raise s3_error(exc, path, self._bucket) from None

    def presign_download(self, path: ArtifactPath, ttl: float) -> tuple[Entry, PresignedRequest]:
        entry, info = self.stat_file(path)
        params = {"Bucket": self._bucket, "Key": self.key(path), "IfMatch": str(info.version)}
        request = self._presign("get_object", params, ttl)
        # If-Match is a signed header: the GET must carry it, and fails if the object changed.
        headers = {"If-Match": str(info.version)}
        return entry, PresignedRequest(request.url, "GET", headers, request.expires_at)


class _S3Upload(BufferedUpload):
    """One PutObject for a file up to `PART_SIZE`, else a multipart upload sent as parts fill."""

    def __init__(self, storage: S3Storage, path: ArtifactPath) -> None:
        super().__init__(path, PART_SIZE)
        self._storage = storage
        self._client = storage.client
        self._bucket = storage.bucket
        self._key = storage.key(path)
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._report: Callable[[str | None], None] | None = None
        self._starting = False  # STARTING was reported and nothing has replaced it yet

    def on_cleanup_handle(self, report: Callable[[str | None], None]) -> None:
        """Reports STARTING before the multipart upload is created, its id once it is (before
        its first part), and None once it is completed or aborted."""
        self._report = report

    def _fail(self, exc: ClientError | BotoCoreError) -> ArtifactError:
        return s3_error(exc, self._path, self._bucket)

    def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            if self._report is not None:  # recorded before S3 holds anything (base.STARTING)
                self._report(STARTING)
                self._starting = True
            try:
                reply = self._client.create_multipart_upload(
                    Bucket=self._bucket, Key=self._key, **self._storage._extra_args
                )
            except (ClientError, BotoCoreError) as exc:
                raise self._fail(exc) from None
            self._upload_id = reply["UploadId"]
            if self._report is not None:
                self._report(self._upload_id)  # raising: the caller's abort discards it
                self._starting = False
        try:
            number = len(self._parts) + 1
            part = self._client.upload_part(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        except (ClientError, BotoCoreError) as exc:
            raise self._fail(exc) from None
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})

    def _conditional(self, call: Any, overwrite: bool) -> Any:
        return conditional_write(call, overwrite, self._path, self._bucket)

    def _put_whole(self, data: bytes, sha256: str, overwrite: bool) -> None:
        extra = dict(self._storage._extra_args)
        extra["Metadata"] = {**extra.get("Metadata", {}), DIGEST_KEY: sha256}
        self._conditional(
            lambda condition: self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=data, **extra, **condition
            ),
            overwrite,
        )

    def _finish_parts(self, sha256: str, overwrite: bool) -> None:
        upload_id = self._upload_id
        reply = self._conditional(
            lambda condition: self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=self._key,
                UploadId=upload_id,  # type: ignore[arg-type]
                MultipartUpload={"Parts": self._parts},
                **condition,
            ),
            overwrite,
        )
        self._upload_id = None
        self._gone()
        self._attach_digest(reply["ETag"], sha256)

    def _gone(self) -> None:
        if self._report is not None:
            self._report(None)

    def _attach_digest(self, etag: str, sha256: str) -> None:
        """Copies the completed object onto itself with the digest in its metadata.

        Guarded by the ETag: if another upload replaced the object meanwhile, it stays as is.
        """
        if self._size > MAX_COPY_SIZE:
            return  # verified on upload, not remembered (as on disks without xattrs)
        extra = {k: v for k, v in self._storage._extra_args.items() if k != "Metadata"}
        metadata = {**self._storage._extra_args.get("Metadata", {}), DIGEST_KEY: sha256}
        try:
            self._client.copy_object(
                Bucket=self._bucket,
                Key=self._key,
                CopySource={"Bucket": self._bucket, "Key": self._key},
                CopySourceIfMatch=etag,
                MetadataDirective="REPLACE",
                Metadata=metadata,
                **extra,
            )
        except ClientError as exc:
            if _code(exc) == "PreconditionFailed":
                log.info("'%s' was replaced before its digest was attached", self._path)
            else:  # stored and verified; only the digest is not remembered
                log.warning("could not attach the sha256 of '%s': %s", self._path, exc)
        except BotoCoreError as exc:
            log.warning("could not attach the sha256 of '%s': %s", self._path, exc)

    def _discard(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is None:
            if self._starting:  # the creation failed: nothing to abort, nothing to record
                self._starting = False
                self._gone()
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=upload_id
            )
        except ClientError as exc:
            if _code(exc) != "NoSuchUpload":
                # Reported, it stays recorded and a sweeper aborts it after the streamed-upload
                # TTL (else the start-up sweep, after a day); nothing of it is visible meanwhile.
                log.warning("could not abort the multipart upload of '%s': %s", self._path, exc)
                return
        except BotoCoreError as exc:
            log.warning("could not abort the multipart upload of '%s': %s", self._path, exc)
            return
        self._gone()


class _S3Reader(FileReader):
    def __init__(self, storage: S3Storage, entry: Entry, etag: str) -> None:
        self._storage = storage
        self._etag = etag
        self.entry = entry
        self._body: Any = None

    def chunks(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        path, size = self.entry.path, self.entry.size
        end = size if limit == 0 else min(size, offset + limit)
        if offset >= end:
            return
        storage = self._storage
        try:
            reply = storage.client.get_object(
                Bucket=storage.bucket,
                Key=storage.key(path),
                Range=f"bytes={offset}-{end - 1}",
                IfMatch=self._etag,
            )
            self._body = reply["Body"]
            position = offset
            for data in self._body.iter_chunks(chunk_size):
                position += len(data)
                yield data
        except ClientError as exc:
            if _code(exc) == "PreconditionFailed":
                raise Aborted(
                    f"'{path}' was replaced while being read; download it again"
                ) from None
            raise s3_error(exc, path, storage.bucket) from None
        except BotoCoreError as exc:
            raise s3_error(exc, path, storage.bucket) from None
        if position != end:
            raise DataLoss(
                f"'{path}': the object store sent {position - offset} of {end - offset} bytes"
            )

    def close(self) -> None:
        body, self._body = self._body, None
        if body is not None:
            body.close()


# -- configuration -------------------------------------------------------------------------


def _parse_destination(destination: str) -> tuple[str, str]:
    return parse_bucket_destination(
        destination, "s3", "S3", _BUCKET, "3-63 lower-case letters, digits, '.' and '-'"
    )


def validate_endpoint_url(url: str) -> str:
    """`scheme://host[:port]`: a path would be prepended to every key (`s3://b/k/b/k` doubling)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidArgument(f"MLFLOW_S3_ENDPOINT_URL {url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidArgument(
            f"MLFLOW_S3_ENDPOINT_URL {url!r} must be http(s)://host[:port], e.g. "
            "http://127.0.0.1:9000"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise InvalidArgument(
            f"MLFLOW_S3_ENDPOINT_URL {url!r} must be only scheme://host[:port]: the bucket and "
            "key prefix belong in the artifacts destination (s3://bucket/prefix), not the endpoint"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _make_client(env: dict[str, str]) -> S3Client:
    endpoint = settings.S3_ENDPOINT_URL.get(env) or None
    if endpoint is not None:
        endpoint = validate_endpoint_url(endpoint)
    style = (settings.S3_ADDRESSING_STYLE.get(env) or settings.S3_ADDRESSING_STYLE.default).lower()
    if style not in ("auto", "path", "virtual"):
        raise InvalidArgument(
            f"MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE {style!r} must be auto, path or virtual"
        )
    signature = settings.S3_SIGNATURE_VERSION.get(env) or settings.S3_SIGNATURE_VERSION.default
    timeout = transfer_timeout(env)
    config = Config(
        signature_version=UNSIGNED if signature == "unsigned" else signature,
        s3=cast("_S3Dict", {"addressing_style": style}),
        retries=_retries(env),
        max_pool_connections=64,
        connect_timeout=min(10.0, timeout),
        read_timeout=timeout,
    )
    verify: bool | str | None = False if _truthy(settings.S3_IGNORE_TLS.get(env)) else None
    if verify is None and settings.S3_CA_BUNDLE.get(env):
        verify = settings.S3_CA_BUNDLE.get(env)
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint, verify=verify, config=config)


def _retries(env: dict[str, str]) -> _RetryDict:
    """botocore's standard retry mode unless AWS_RETRY_MODE says otherwise; AWS_MAX_ATTEMPTS."""
    mode = settings.S3_RETRY_MODE.get(env) or settings.S3_RETRY_MODE.default
    if mode not in ("legacy", "standard", "adaptive"):
        raise InvalidArgument(f"AWS_RETRY_MODE {mode!r} must be legacy, standard or adaptive")
    retries: _RetryDict = {"mode": cast("Any", mode)}
    attempts = settings.S3_MAX_ATTEMPTS.get(env)
    if attempts:
        if not attempts.isdigit() or int(attempts) < 1:
            raise InvalidArgument(f"AWS_MAX_ATTEMPTS {attempts!r} must be a positive integer")
        retries["total_max_attempts"] = int(attempts)
    return retries


def _upload_extra_args(env: dict[str, str], client: S3Client) -> dict[str, Any]:
    raw = settings.S3_UPLOAD_EXTRA_ARGS.get(env)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"MLFLOW_S3_UPLOAD_EXTRA_ARGS is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidArgument(
            "MLFLOW_S3_UPLOAD_EXTRA_ARGS must be a JSON object such as "
            '{"ServerSideEncryption": "aws:kms"}'
        )
    model = client.meta.service_model
    accepted: set[str] | None = None
    for operation in ("PutObject", "CreateMultipartUpload"):
        shape = model.operation_model(operation).input_shape
        members = set(shape.members) if shape is not None else set()
        accepted = members if accepted is None else accepted & members
    for name, item in value.items():
        if name in _RESERVED_UPLOAD_ARGS or name not in (accepted or set()):
            raise InvalidArgument(
                f"MLFLOW_S3_UPLOAD_EXTRA_ARGS: {name!r} is not a PutObject parameter artifactd "
                "can pass (allowed: e.g. ServerSideEncryption, SSEKMSKeyId, ACL, StorageClass, "
                "Metadata, ContentType, Tagging)"
            )
        if name == "Metadata" and not (
            isinstance(item, dict) and all(isinstance(v, str) for v in item.values())
        ):
            raise InvalidArgument("MLFLOW_S3_UPLOAD_EXTRA_ARGS: Metadata must map names to strings")
    return value


# -- helpers -------------------------------------------------------------------------------


def conditional_write(call: Any, overwrite: bool, path: ArtifactPath, bucket: str) -> Any:
    """Runs `call(condition)`: no condition to overwrite, `If-None-Match: *` to refuse an
    existing object atomically (of two racing writers exactly one wins)."""
    try:
        return call({} if overwrite else {"IfNoneMatch": "*"})
    except ClientError as exc:
        if _code(exc) == "PreconditionFailed" and not overwrite:
            raise already_exists(path) from None
        if _code(exc) == "ConditionalRequestConflict":
            raise Aborted(
                f"another upload of '{path}' was completing at the same time; retry"
            ) from None
        raise s3_error(exc, path, bucket) from None
    except BotoCoreError as exc:
        raise s3_error(exc, path, bucket) from None


def _folders_on_the_way(prefix: str, key: str) -> Iterator[str]:
    """The folders between `prefix` and `key`: `<prefix>a/`, `<prefix>a/b/` for `<prefix>a/b/c`."""
    position = key.find("/", len(prefix))
    while position != -1:
        yield key[: position + 1]
        position = key.find("/", position + 1)


def _ns(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000) * 1000


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def s3_error(exc: ClientError | BotoCoreError, path: ArtifactPath, bucket: str) -> ArtifactError:
    """Maps a botocore failure to the artifactd error a client can act on (no credentials in it)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return _client_error(
            str(error.get("Code", "")), int(status), str(error.get("Message", "")), path, bucket
        )
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return PermissionDenied(f"the server has no usable S3 credentials: {exc}")
    # Connection refused/reset, timeouts, a stream cut mid-body: the store may be back later.
    return Unavailable(f"the object store could not be reached for '{path}': {exc}")


def _client_error(
    code: str, status: int, message: str, path: ArtifactPath, bucket: str
) -> ArtifactError:
    detail = f"{code}: {message}" if message else code
    if code == "NoSuchBucket":
        return FailedPrecondition(f"the bucket {bucket!r} does not exist ({detail})")
    if code in _CREDENTIAL_CODES:
        return PermissionDenied(
            f"the object store refused the artifactd server's S3 credentials for '{path}' "
            f"({detail}): the server's operator must fix its AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if code in _NOT_FOUND_CODES:
        status = 404
    elif code in _DENIED_CODES:
        status = 403
    elif code in _RETRYABLE_CODES:
        status = 503
    elif code in ("EntityTooLarge", "QuotaExceeded"):
        status = 413
    return http_error(status, detail, path, store="object store")
