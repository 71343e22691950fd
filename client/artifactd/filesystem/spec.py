"""`ArtifactdFileSystem`: an artifactd server as an fsspec filesystem.

fsspec finds it for `artifactd://` URLs through the `fsspec.specs` entry point, so pandas,
pyarrow, Dask, polars and every other fsspec user read and write artifacts as they do S3 objects:
`pd.read_parquet("artifactd://host:50051/runs/x/features.parquet")`.

URLs take the MLflow plugin's form, parsed by the same function (`target.server_uri`):
`artifactd://HOST:PORT/<path>`, the path relative to the server's artifact root;
`artifactd:///<path>` uses the configured server (`ARTIFACTD_SERVER`). A run's artifacts are
addressed with the `run_id` storage option: paths are then relative to that run's artifact root
and the server resolves it, as for `runs:/<run_id>/<path>` everywhere else in artifactd — a
run's `artifact_uri` is a storage location the server keeps and a client never addresses (it may
be in another root; a deleted run's artifacts stay readable but not writable).

It is object-store-like: a directory exists while something is stored below it, `mkdir` creates
nothing (the first file written below a path makes it a directory), there is no append and no
rename. Everything goes through `ArtifactClient`: range reads for `cat_file` and files opened for
reading, streamed atomic uploads for files opened for writing, verified (sha256) and direct or
resumable uploads and downloads for `put` and `get`, one recursive listing for `find` (and so
`glob` and pyarrow's dataset discovery), one call per tree for `rm(recursive=True)`.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from dataclasses import replace
from datetime import datetime
from typing import Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.spec import AbstractFileSystem
from fsspec.utils import isfilelike, stringify_path

from artifactd.client import ArtifactClient, ArtifactInfo, ClientSettings
from artifactd.client.settings import read_token_file
from artifactd.client.target import server_uri
from artifactd.filesystem.errors import is_a_directory, translated
from artifactd.filesystem.file import ArtifactdFile
from artifactd.protocol import errors
from artifactd.protocol.ids import check_run_id

PROTOCOL = "artifactd"
DEFAULT_BLOCK_SIZE = 1024 * 1024
"""Bytes per range read of a file opened for reading, and per block handed to an upload. A
column of a Parquet file costs its bytes plus at most this much read ahead; a sequential
`read()` of a whole file is one stream whatever the block size."""

_SETTING_OPTIONS = ("tls", "tls_ca", "client_cert", "client_key", "token")
"""Storage options that set the `ClientSettings` field of the same name."""


class ArtifactdFileSystem(AbstractFileSystem):
    """fsspec's filesystem interface over one artifactd server (and optionally one run).

    Storage options, each overriding the environment variable the client reads (unset: the
    variable's value): `target` (`HOST:PORT`; from the URL, else `ARTIFACTD_SERVER`), `run_id`
    (paths relative to that run's artifact root), `tls` (`ARTIFACTD_TLS`), `tls_ca`
    (`ARTIFACTD_TLS_CA`), `client_cert` and `client_key` (`ARTIFACTD_CLIENT_CERT`,
    `ARTIFACTD_CLIENT_KEY`), `token` (`ARTIFACTD_TOKEN`), `token_file` (`ARTIFACTD_TOKEN_FILE`:
    read once, when the filesystem is made), and `block_size`.
    """

    protocol = PROTOCOL
    root_marker = ""

    def __init__(
        self,
        target: str | None = None,
        *,
        run_id: str | None = None,
        tls: bool | None = None,
        tls_ca: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        token: str | None = None,
        token_file: str | None = None,
        block_size: int | None = None,
        **storage_options: Any,
    ) -> None:
        super().__init__(**storage_options)
        if run_id is not None:
            with translated(""):
                check_run_id(run_id)
        self.run_id = run_id
        self.blocksize = block_size or DEFAULT_BLOCK_SIZE
        options = (tls, tls_ca, client_cert, client_key, token)
        given: dict[str, Any] = dict(zip(_SETTING_OPTIONS, options, strict=True))
        with translated(""):
            if token_file is not None:
                if token is not None:
                    raise errors.InvalidArgument("give the token or token_file, not both")
                given["token"] = read_token_file(token_file, "token_file")
            settings = ClientSettings.from_env()
        self._settings = replace(settings, **{k: v for k, v in given.items() if v is not None})
        self._target = target
        self._lock = threading.Lock()
        self._connection: dict[str, Any] = {}  # "client", "pid": shared with the finalizer
        weakref.finalize(self, _close, self._connection)

    # -- the connection --------------------------------------------------------------------

    def client(self) -> ArtifactClient:
        """The `ArtifactClient` this filesystem works through: one channel per process, made
        on first use (a channel inherited across `fork()` is not usable in the child)."""
        with self._lock:
            client = self._connection.get("client")
            if client is not None and self._connection.get("pid") == os.getpid():
                return client  # type: ignore[no-any-return]
            with translated(""):
                client = ArtifactClient(self._target, settings=self._settings)
            self._connection.update(client=client, pid=os.getpid())
            return client

    @property
    def target(self) -> str:
        """The server's `HOST:PORT`."""
        return self.client().target

    @property
    def fsid(self) -> str:
        run = f"?run_id={self.run_id}" if self.run_id else ""
        return f"{PROTOCOL}://{self.target}{run}"

    # -- URLs ------------------------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """The artifact path of a URL (`artifactd://HOST:PORT/<path>`) or of a path."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text: str = stringify_path(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :].partition("/")[2]
        elif text.startswith(f"{PROTOCOL}:"):
            text = text[len(PROTOCOL) + 1 :]
        return text.strip("/")

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        """The server a URL names, as the `target` storage option. Only `scheme://HOST:PORT`
        goes through the URI parser: the path may be a glob, which the grammar refuses."""
        text = stringify_path(path)
        if not text.startswith(f"{PROTOCOL}://"):
            return {}
        netloc = text[len(PROTOCOL) + 3 :].partition("/")[0]
        if not netloc:
            return {}
        with translated(text):
            return {"target": server_uri(f"{PROTOCOL}://{netloc}").target}

    def unstrip_protocol(self, name: str) -> str:
        return f"{PROTOCOL}://{self.target}/{self._strip_protocol(name)}"

    # -- describing ------------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        with translated(path):
            return _entry(self.client().get_artifact_info(path, run_id=self.run_id))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        """The entries of a directory; a file lists as itself."""
        path = self._strip_protocol(path)
        client = self.client()
        with translated(path):
            try:
                found = [_entry(i) for i in client.iter_artifacts(path, run_id=self.run_id)]
            except errors.FailedPrecondition:  # a file
                found = [_entry(client.get_artifact_info(path, run_id=self.run_id))]
        return found if detail else [entry["name"] for entry in found]

    def find(
        self,
        path: str,
        maxdepth: int | None = None,
        withdirs: bool = False,
        detail: bool = False,
        **kwargs: Any,
    ) -> Any:
        """Everything below `path` from one recursive listing (paged by the server), where
        fsspec's own walks one directory per call; with `maxdepth`, fsspec's walk."""
        if maxdepth is not None:
            return super().find(path, maxdepth, withdirs, detail, **kwargs)
        path = self._strip_protocol(path)
        client = self.client()
        found: dict[str, dict[str, Any]] = {}
        with translated(path):
            try:
                listed = client.iter_artifacts(path, recursive=True, run_id=self.run_id)
                found = {e["name"]: e for e in map(_entry, listed)}
                if withdirs and path:
                    found[path] = self.info(path)
            except errors.FailedPrecondition:  # a file finds itself
                found = {path: self.info(path)}
            except errors.NotFound:
                found = {}
        if not withdirs:
            found = {name: e for name, e in found.items() if e["type"] != "directory"}
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    def exists(self, path: str, **kwargs: Any) -> bool:
        """Whether something is stored at `path`. Unlike fsspec's default, only "not found"
        (or a path that cannot exist) is False: a refused token or an unreachable server
        raises, instead of looking like a missing file."""
        try:
            self.info(path)
        except (FileNotFoundError, ValueError):
            return False
        return True

    def modified(self, path: str) -> datetime:
        modified = self.info(path).get("modified")
        if modified is None:
            raise NotImplementedError(f"the server reports no modification time for {path!r}")
        return modified  # type: ignore[no-any-return]

    def checksum(self, path: str) -> int:
        return int(self.ukey(path), 16)

    def ukey(self, path: str) -> str:
        """The file's sha256 (a directory's listing, for a directory)."""
        details = self.info(path)
        if details["type"] == "directory":
            return super().ukey(path)  # type: ignore[no-any-return]
        return details["sha256"]  # type: ignore[no-any-return]

    # -- reading ---------------------------------------------------------------------------

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        """Bytes `[start:end]` of a file, as Python slices them (negative: from the end; past
        the end: cut, or empty), from one range read: only those bytes leave the server."""
        return self.read_range(self._strip_protocol(path), start, end)

    def read_range(
        self,
        path: str,
        start: int | None,
        end: int | None,
        pinned: dict[str, Any] | None = None,
    ) -> bytes:
        """`cat_file`; with `pinned` (an `info` of the file), a file no longer that one raises
        (`errno.ESTALE`): what a file opened for reading checks at every block."""
        client = self.client()
        with translated(path):
            if (start is not None and start < 0) or (end is not None and end < 0):
                details = pinned or self._file_info(path)
                start, end, _ = slice(start, end).indices(details["size"])
            start = start or 0
            if end is not None and end <= start:
                if pinned is None:
                    self._file_info(path)  # a missing file or a directory still raises
                return b""
            length = None if end is None else end - start
            try:
                with client.open_range(path, start, length, run_id=self.run_id) as reader:
                    data = reader.read()
                    info = ArtifactInfo.from_proto(reader.start())
            except errors.OutOfRange:  # a start past the end: nothing there, as in a slice
                return b""
            except errors.FailedPrecondition as exc:
                if self.isdir(path):
                    raise is_a_directory(path, exc) from exc
                raise
        _check_version(_entry(info), pinned, path)
        return data

    def _file_info(self, path: str) -> dict[str, Any]:
        details = self.info(path)
        if details["type"] != "file":
            raise is_a_directory(path)
        return details

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> ArtifactdFile:
        return ArtifactdFile(
            self, path, mode, block_size or self.blocksize, autocommit,
            cache_options=cache_options, **kwargs,
        )  # fmt: skip

    def get_file(
        self,
        rpath: str,
        lpath: Any = None,
        callback: Callback = DEFAULT_CALLBACK,
        outfile: Any = None,
        **kwargs: Any,
    ) -> None:
        """Downloads one file as `ArtifactClient` does: verified against the server's sha256,
        renamed into place only when complete, large ones straight from storage where it can
        presign. A directory becomes a local directory (`get` copies the files in it)."""
        if outfile is not None or isfilelike(lpath):
            super().get_file(rpath, lpath, callback, outfile, **kwargs)
            return
        rpath = self._strip_protocol(rpath)
        details = self.info(rpath)
        if details["type"] == "directory":
            os.makedirs(lpath, exist_ok=True)
            return
        callback.set_size(details["size"])
        with translated(rpath):
            self.client().download_file(rpath, os.fspath(lpath), run_id=self.run_id)
        callback.relative_update(details["size"])

    # -- writing ---------------------------------------------------------------------------

    def put_file(
        self,
        lpath: Any,
        rpath: str,
        callback: Callback = DEFAULT_CALLBACK,
        mode: str = "overwrite",
        **kwargs: Any,
    ) -> None:
        """Uploads one file as `ArtifactClient.log_artifact` does: atomic, verified, large
        files direct to storage or resumable. A local directory creates nothing (an
        object-store-like filesystem has directories only where files are)."""
        local = os.fspath(lpath)
        if os.path.isdir(local):
            return
        rpath = self._strip_protocol(rpath)
        if mode == "create" and self.exists(rpath):
            raise FileExistsError(errno.EEXIST, "the file exists (mode 'create')", rpath)
        parent, _, name = rpath.rpartition("/")
        size = os.path.getsize(local)
        callback.set_size(size)
        with translated(rpath):
            if not name:
                raise errors.InvalidArgument("put_file needs a file path, not the root")
            self.client().log_artifact(local, parent, run_id=self.run_id, file_name=name)
        callback.relative_update(size)

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """`mode="create"` refuses to replace a file, on the server (fsspec's default checks
        first and then writes)."""
        with self.open(path, "xb" if mode == "create" else "wb", **kwargs) as f:
            f.write(value)

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copies a file through this client, reading and uploading at once (no local copy):
        the source's bytes are checked against its sha256 before the copy is published. A
        directory copies nothing (its files are copied one by one)."""
        source, target = self._strip_protocol(path1), self._strip_protocol(path2)
        client = self.client()
        with translated(source):
            try:
                with client.open_range(source, run_id=self.run_id) as reader:
                    reader.start()  # a directory raises here, before an upload starts
                    client.log_stream(reader, target, run_id=self.run_id)
            except errors.FailedPrecondition:
                if not self.isdir(source):
                    raise

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """Creates nothing: a directory comes into being with the first file written below it
        (as on object stores). Raises FileExistsError if something is already there."""
        path = self._strip_protocol(path)
        if self.exists(path):
            raise FileExistsError(errno.EEXIST, "something is stored at this path", path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Creates nothing (see `mkdir`); without `exist_ok`, an existing path raises."""
        if not exist_ok:
            self.mkdir(path)

    # -- deleting --------------------------------------------------------------------------

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        """Deletes files and, with `recursive`, directory trees: one call per tree (fsspec's
        default deletes file by file). A missing path raises FileNotFoundError."""
        if not recursive or maxdepth is not None:
            super().rm(path, recursive=recursive, maxdepth=maxdepth)
            return
        done: list[str] = []
        for target in sorted(self.expand_path(path)):
            if not any(target == d or target.startswith(f"{d}/") for d in done):
                self._delete(target)
                done.append(target)

    def rm_file(self, path: str) -> None:
        """Deletes a file, or an empty directory; a directory with files in it raises."""
        path = self._strip_protocol(path)
        if self.info(path)["type"] == "directory" and self.ls(path, detail=False):
            raise IsADirectoryError(errno.EISDIR, "rm(..., recursive=True) deletes a tree", path)
        self._delete(path)

    def rmdir(self, path: str) -> None:
        path = self._strip_protocol(path)
        if self.info(path)["type"] != "directory":
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        if self.ls(path, detail=False):
            raise OSError(errno.ENOTEMPTY, "the directory is not empty", path)
        self._delete(path)

    def _delete(self, path: str) -> None:
        with translated(path):
            existed = self.client().delete_artifacts(path, run_id=self.run_id)
        if not existed:
            raise FileNotFoundError(errno.ENOENT, "nothing is stored at this path", path)
        self.invalidate_cache(path)


def _entry(info: ArtifactInfo) -> dict[str, Any]:
    """fsspec's description of a file or directory: `name`, `size`, `type`, plus `sha256`,
    `mtime` (POSIX seconds, as fsspec's local and SFTP filesystems give it) and `modified`."""
    modified = info.modified
    return {
        "name": info.path,
        "size": 0 if info.is_dir else info.file_size,
        "type": "directory" if info.is_dir else "file",
        "sha256": info.sha256,
        "mtime": modified.timestamp() if modified is not None else None,
        "modified": modified,
    }


def _check_version(found: dict[str, Any], pinned: dict[str, Any] | None, path: str) -> None:
    """Raises if `found` (what a range read was served from) is not the `pinned` version: a
    different size, or a sha256 or modification time both sides know and that differ."""
    if pinned is None:
        return
    changed = found["size"] != pinned["size"] or any(
        found[key] is not None and pinned[key] is not None and found[key] != pinned[key]
        for key in ("sha256", "mtime")
    )
    if changed:
        raise OSError(
            errno.ESTALE, "the file was replaced on the server since it was opened; open it "
            "again", path,
        )  # fmt: skip


def _close(state: dict[str, Any]) -> None:
    client = state.pop("client", None)
    pid = state.pop("pid", None)
    if client is not None and pid == os.getpid():
        client.close()
