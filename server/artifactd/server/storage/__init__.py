"""Picks the storage adapter for an `--artifacts-destination` URI by its scheme."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from artifactd.errors import InvalidArgument
from artifactd.server.storage.base import Storage


def open_storage(destination: str, *, fsync: bool = True) -> Storage:
    """The adapter for `destination`: a directory path a `file://` URI, or `s3://bucket/prefix`."""
    if not destination:
        raise InvalidArgument("the artifacts destination is empty")
    parts = urlsplit(destination)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and destination[1:2] == ":"):
        from artifactd.server.storage.local import LocalStorage

        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise InvalidArgument(
                    f"file URI {destination!r} names host {parts.netloc!r}; "
                    "mount the share and give its local path instead"
                )
            return LocalStorage(unquote(parts.path), fsync=fsync)
        return LocalStorage(destination, fsync=fsync)
    if scheme == "s3":
        from artifactd.server.storage.s3 import S3Storage  # boto3 only when S3 is used

        return S3Storage(destination)
    if scheme == "gs":
        from artifactd.server.storage.gcs import GCSStorage  # google-cloud-storage only for GCS

        return GCSStorage(destination)
    if scheme == "wasbs":
        from artifactd.server.storage.azure import AzureBlobStorage  # azure-storage-blob only

        return AzureBlobStorage(destination)
    if scheme == "ftp":
        from artifactd.server.storage.ftp import FTPStorage

        return FTPStorage(destination)
    if scheme == "sftp":
        from artifactd.server.storage.sftp import SFTPStorage  # paramiko only when SFTP is used

        return SFTPStorage(destination)
    raise InvalidArgument(
        f"unsupported artifacts destination scheme {scheme!r} in {destination!r}; "
        "supported: a local or NFS directory path, file:///path, "
        "s3://bucket/prefix, gs://bucket/prefix, wasbs://container@account.blob.core.windows.net/prefix"
    )
