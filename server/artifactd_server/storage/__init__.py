"""Picks the storage adapter for an `--artifacts-destination` URI by its scheme.

Built-in schemes map to the modules of this package, imported only when used (each pulls in its
backend's client library). Other schemes come from installed packages that register a factory in
the `artifactd.backends` entry-point group, named after the scheme:

    [project.entry-points."artifactd.backends"]
    myfs = "mypackage.artifactd_backend:open_storage"

The factory is called with the destination URI and returns an `artifactd_server.storage.base.
Storage`. A plugin cannot replace a built-in scheme: the built-in wins and the server warns.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from urllib.parse import unquote, urlsplit

from artifactd.protocol.errors import ArtifactError, FailedPrecondition, InvalidArgument
from artifactd_server.extras import raise_missing_extra
from artifactd_server.storage.base import Storage

log = logging.getLogger(__name__)

PLUGIN_GROUP = "artifactd.backends"

# scheme -> "module:class"; the class is called with the destination URI.
BUILT_IN = {
    "s3": "artifactd_server.storage.s3:S3Storage",
    "gs": "artifactd_server.storage.gcs:GCSStorage",
    "wasbs": "artifactd_server.storage.azure:AzureBlobStorage",
    "ftp": "artifactd_server.storage.ftp:FTPStorage",
    "sftp": "artifactd_server.storage.sftp:SFTPStorage",
    "hdfs": "artifactd_server.storage.hdfs:HDFSStorage",
    "viewfs": "artifactd_server.storage.hdfs:HDFSStorage",
}
# scheme -> the artifactd-server extra that installs its client library (FTP is the stdlib's)
EXTRAS = {
    "s3": "s3",
    "gs": "gcs",
    "wasbs": "azure",
    "sftp": "sftp",
    "hdfs": "hdfs",
    "viewfs": "hdfs",
}
URI_FORMS = (
    "a local or NFS directory path, file:///path, s3://bucket/prefix, gs://bucket/prefix, "
    "wasbs://container@account.blob.core.windows.net/prefix, ftp://user:pass@host/path, "
    "sftp://user@host/path, hdfs://namenode:port/path"
)


def open_storage(destination: str, *, fsync: bool = True, direct_io: bool = True) -> Storage:
    """The adapter for `destination`; `InvalidArgument` for a URI no backend takes."""
    if not destination:
        raise InvalidArgument("the artifacts destination is empty")
    parts = urlsplit(destination)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and destination[1:2] == ":"):
        from artifactd_server.storage.local import LocalStorage

        if scheme == "file":
            if parts.netloc not in ("", "localhost"):
                raise InvalidArgument(
                    f"file URI {destination!r} names host {parts.netloc!r}; "
                    "mount the share and give its local path instead"
                )
            return LocalStorage(unquote(parts.path), fsync=fsync, direct_io=direct_io)
        return LocalStorage(destination, fsync=fsync, direct_io=direct_io)
    plugins = {ep.name.lower(): ep for ep in entry_points(group=PLUGIN_GROUP)}
    if scheme in BUILT_IN:
        if scheme in plugins:
            log.warning(
                "ignoring the %s backend %r of %s: %s:// is built in",
                PLUGIN_GROUP, plugins[scheme].value, _owner(plugins[scheme]), scheme,
            )  # fmt: skip
        return _checked(_built_in(scheme)(destination), scheme)
    if scheme in plugins:
        return _checked(_open_with_plugin(plugins[scheme], destination), scheme)
    extra = f"; installed plugins add: {', '.join(sorted(plugins))}" if plugins else ""
    raise InvalidArgument(
        f"unsupported artifacts destination scheme {scheme!r} in {destination!r}; "
        f"supported: {URI_FORMS}{extra}"
    )


def _built_in(scheme: str) -> Callable[[str], object]:
    """The adapter class for a built-in scheme; a missing extra is one line naming it."""
    module, _, name = BUILT_IN[scheme].partition(":")
    try:
        factory: Callable[[str], object] = getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise_missing_extra(f"the {scheme}:// artifacts destination", EXTRAS[scheme], exc)
    return factory


def _owner(ep: EntryPoint) -> str:
    return f"package {ep.dist.name!r}" if ep.dist is not None else "an installed package"


def _load(ep: EntryPoint) -> Callable[[str], object]:
    try:
        factory = ep.load()
    except Exception as exc:
        raise FailedPrecondition(
            f"the {ep.name}:// backend of {_owner(ep)} ({ep.value}) failed to load: {exc}"
        ) from exc
    if not callable(factory):
        raise FailedPrecondition(
            f"the {ep.name}:// backend of {_owner(ep)} ({ep.value}) is not callable"
        )
    return factory  # type: ignore[no-any-return]


def _open_with_plugin(ep: EntryPoint, destination: str) -> object:
    factory = _load(ep)
    try:
        return factory(destination)
    except ArtifactError:
        raise
    except Exception as exc:  # a plugin's own failure: say whose it is
        raise FailedPrecondition(
            f"the {ep.name}:// backend of {_owner(ep)} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _checked(storage: object, scheme: str) -> Storage:
    if not isinstance(storage, Storage):
        raise FailedPrecondition(
            f"the {scheme}:// backend returned {type(storage).__name__}, not an artifactd Storage"
        )
    return storage
