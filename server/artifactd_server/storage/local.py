"""Local disk and NFS: the artifact root is a directory.

Publishing follows the one recipe that is atomic on local filesystems and on NFS alike: write to a
hidden temporary file *in the destination directory* (rename across directories is not atomic on
every NFS server), fsync it, then `rename` over the destination (overwrite) or `link` it into
place (fail-if-exists: `link` refuses an existing name atomically), and fsync the directory so the
new name survives a crash. Readers hold an open descriptor, so a concurrent overwrite never mixes
two versions in one download.

The sha256 of a published file is stored in an extended attribute together with the size and
modification time it describes; a file changed behind the server's back no longer matches them
and is reported with an unknown digest instead of a wrong one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence

from artifactd.protocol import directio
from artifactd.protocol.errors import (
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unavailable,
)
from artifactd.protocol.localfs import inside, make_dirs_inside, remove_empty_dirs
from artifactd.protocol.paths import RESERVED_PREFIX, ArtifactPath
from artifactd_server.storage import group_sync, libc, owners, writeback
from artifactd_server.storage.base import (
    PRECHECKED_FROM,
    Entry,
    FileReader,
    ResumableWrites,
    Storage,
    StorageCapabilities,
    Upload,
)
from artifactd_server.storage.common import already_exists, check_token, child_path, is_reserved

log = logging.getLogger(__name__)

DIGEST_XATTR = "user.artifactd.sha256"
_TEMP_PREFIX = f"{RESERVED_PREFIX}upload-"
_VERIFIED_DIR_TTL = 2.0  # seconds a resolved parent directory is reused without re-checking
_VERIFIED_DIRS_MAX = 1024


class LocalStorage(Storage, ResumableWrites):
    """An artifact root on a local or NFS-mounted directory."""

    name = "local"
    capabilities = StorageCapabilities(range_reads=True)

    def __init__(
        self, root: str | os.PathLike[str], *, fsync: bool = True, direct_io: bool = True
    ) -> None:
        os.makedirs(root, exist_ok=True)
        self._root = os.path.realpath(root)
        self._fsync = fsync
        self._group_sync = fsync and group_sync.available(self._root)
        self._direct_io = (
            direct_io  # large files around the page cache: see artifactd.protocol.directio
        )
        # parent parts -> (real directory, monotonic time it was verified). Uploading a directory
        # of small files puts hundreds of files in one folder: re-walking and re-resolving the
        # same parents for each was a tenth of the server's CPU per file. An entry is trusted for
        # a short time only, and dropped when the directory turns out to be gone.
        self._verified_dirs: dict[tuple[str, ...], tuple[str, float]] = {}

    @property
    def root(self) -> str:
        return self._root

    @property
    def uri(self) -> str:
        return f"file://{self._root}"

    # -- path resolution -------------------------------------------------------------------

    def _full(self, path: ArtifactPath) -> str:
        return os.path.join(self._root, *path.parts)

    def _inside(self, real: str) -> bool:
        return inside(self._root, real)

    def _resolve(self, path: ArtifactPath) -> str:
        """The real location of `path`, refusing symlinks that lead out of the root."""
        real = os.path.realpath(self._full(path))
        if not self._inside(real):
            raise PermissionDenied(f"'{path}' resolves outside the artifact root (a symlink)")
        return real

    # -- writing ---------------------------------------------------------------------------

    def start_upload(self, path: ArtifactPath, *, size: int | None = None) -> Upload:
        # The owner's id in the name lets a start-up sweep remove it once its process is dead.
        precheck = size is None or size >= PRECHECKED_FROM  # else the publish refuses a directory
        return self._create_temp(path, owners.for_root(self._root).upload_name(), precheck=precheck)

    def _create_temp(
        self, path: ArtifactPath, token: str, *, keep: bool = False, precheck: bool = True
    ) -> _LocalUpload:
        """Opens a new hidden temporary file for `path` (`keep`: an abort keeps its bytes;
        `precheck`: refuse a directory at `path` now, not only at the publish)."""
        if path.is_root:
            raise FailedPrecondition("the artifact root is a directory, not a file")
        for _attempt in range(3):
            directory, created = self._parent_dir(path)
            target = os.path.join(directory, path.name)
            if precheck and os.path.isdir(target):
                remove_empty_dirs(created)
                raise _is_a_directory(path)
            temp = os.path.join(directory, f"{_TEMP_PREFIX}{token}")
            try:
                fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            except (FileNotFoundError, NotADirectoryError):
                # A concurrent delete removed the directory (maybe one we just made): make it again.
                self._verified_dirs.pop(path.parent.parts, None)
                continue
            except OSError as exc:
                remove_empty_dirs(created)
                raise _os_error(exc, path) from exc
            return _LocalUpload(self, path, fd, temp, target, [] if keep else created, keep=keep)
        raise Unavailable(f"'{path.parent}' keeps disappearing while uploading '{path}'; retry")

    # -- resumable uploads -------------------------------------------------------------------

    def _partial(self, path: ArtifactPath, token: str) -> str:
        check_token(token)
        directory, _created = self._parent_dir(path)  # the real directory, checked inside root
        return os.path.join(directory, f"{_TEMP_PREFIX}{token}")

    def start_resumable(self, path: ArtifactPath) -> str:
        token = uuid.uuid4().hex
        self._create_temp(path, token, keep=True).abort()  # an empty file, kept
        return token

    def resumable_size(self, path: ArtifactPath, token: str) -> int:
        try:
            return os.stat(self._partial(path, token)).st_size
        except FileNotFoundError:
            raise NotFound(f"the bytes kept for the upload of '{path}' are gone") from None
        except OSError as exc:
            raise _os_error(exc, path) from exc

    def resume_upload(self, path: ArtifactPath, token: str, offset: int) -> Upload:
        partial = self._partial(path, token)
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound(f"the bytes kept for the upload of '{path}' are gone") from None
        except OSError as exc:
            raise _os_error(exc, path) from exc
        size = os.fstat(fd).st_size
        if size != offset:
            os.close(fd)
            raise FailedPrecondition(
                f"the upload of '{path}' has {size} bytes stored; continue from there, not {offset}"
            )
        target = os.path.join(os.path.dirname(partial), path.name)
        return _LocalUpload(self, path, fd, partial, target, [], keep=True, written=size)

    def read_resumable(self, path: ArtifactPath, token: str) -> Iterator[bytes]:
        try:
            with open(self._partial(path, token), "rb") as fh:
                while block := fh.read(1 << 20):
                    yield block
        except FileNotFoundError:
            raise NotFound(f"the bytes kept for the upload of '{path}' are gone") from None

    def discard_resumable(self, path: ArtifactPath, token: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self._partial(path, token))

    def _parent_dir(self, path: ArtifactPath) -> tuple[str, list[str]]:
        """The real directory to create `path` in, and the directories made for it."""
        key = path.parent.parts
        now = time.monotonic()
        cached = self._verified_dirs.get(key)
        if cached is not None and now - cached[1] < _VERIFIED_DIR_TTL:
            return cached[0], []
        try:
            directory, created = make_dirs_inside(self._root, key)
        except FailedPrecondition:
            raise FailedPrecondition(
                f"a parent of '{path}' is a file, so '{path}' cannot be created"
            ) from None
        except OSError as exc:
            raise _os_error(exc, path) from exc
        if len(self._verified_dirs) >= _VERIFIED_DIRS_MAX:
            self._verified_dirs.clear()
        self._verified_dirs[key] = (directory, now)
        return directory, created

    def _sync_dir(self, directory: str) -> None:
        if not self._fsync:
            return
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading ---------------------------------------------------------------------------

    def open_file(self, path: ArtifactPath) -> FileReader:
        if path.is_root:
            raise FailedPrecondition("the artifact root is a directory; download it as a directory")
        real = self._resolve(path)
        try:
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise FailedPrecondition(f"'{path}' is a directory, not a file")
            if not stat.S_ISREG(st.st_mode):
                raise FailedPrecondition(f"'{path}' is not a regular file")
            entry = Entry(path, False, st.st_size, st.st_mtime_ns, _read_digest(fd, st))
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except BaseException:
            os.close(fd)
            raise
        return _LocalReader(fd, entry, direct=self._direct_io)

    def stat(self, path: ArtifactPath) -> Entry:
        real = self._resolve(path)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        return _entry(path, real, st)

    def iter_tree(
        self, path: ArtifactPath, *, recursive: bool, after: ArtifactPath | None = None
    ) -> Iterator[Entry]:
        real = self._resolve(path)
        try:
            st = os.stat(real)
        except OSError as exc:
            raise _os_error(exc, path) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise FailedPrecondition(f"'{path}' is a file, not a directory")
        yield from self._walk(real, path, recursive, after)

    def _walk(
        self, directory: str, path: ArtifactPath, recursive: bool, after: ArtifactPath | None
    ) -> Iterator[Entry]:
        """`directory`: the real location of `path` (no symlink in it). An entry that is no
        symlink is then real as it stands, so only symlinks are resolved: a realpath per entry
        was a system call per component of its path, on every file of a directory download."""
        try:
            with os.scandir(directory) as it:
                items = sorted((e for e in it if not is_reserved(e.name)), key=lambda e: e.name)
        except FileNotFoundError:
            return  # removed while we walked: it has no entries any more
        for item in items:
            child = child_path(path, item.name)
            if child is None:
                continue
            try:
                if item.is_symlink():
                    real = os.path.realpath(item.path)
                    if not self._inside(real):
                        continue  # a symlink leading out of the root is not part of the store
                    st = os.stat(real)
                else:
                    real, st = item.path, item.stat(follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        continue  # made a symlink since the directory was read: left out
            except FileNotFoundError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            # Descend only into real directories: a symlinked one could loop back on the walk.
            descend = recursive and is_dir and not item.is_symlink()
            if after is not None and child.parts <= after.parts:
                if descend and after.is_relative_to(child):
                    yield from self._walk(real, child, recursive, after)
                continue
            yield _entry(child, real, st)
            if descend:
                yield from self._walk(real, child, recursive, after)

    # -- deleting --------------------------------------------------------------------------

    def delete(self, path: ArtifactPath) -> bool:
        if path.is_root:
            raise FailedPrecondition("refusing to delete the artifact root")
        directory = self._resolve(path.parent)
        target = os.path.join(directory, path.name)
        self._verified_dirs.clear()
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno == errno.ENOTDIR:
                return False  # a parent is a file: nothing can be at this path
            raise _os_error(exc, path) from exc
        try:
            if stat.S_ISDIR(st.st_mode):
                _remove_tree(target)
            else:
                os.unlink(target)  # a file, or a symlink itself (never what it points to)
        except FileNotFoundError:
            return True  # a concurrent delete won the race; the path is gone either way
        except OSError as exc:
            raise _os_error(exc, path) from exc
        self._sync_dir(directory)
        return True

    def close(self) -> None:
        owners.release(self._root)  # a server stopped cleanly leaves no owner mark behind

    def free_bytes(self, path: ArtifactPath) -> int | None:
        # The root's filesystem: a subdirectory that is a mount point of its own is not told
        # apart (statvfs of the nearest existing parent would cost a walk per upload).
        try:
            st = os.statvfs(self._root)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    def prepare_group(self, uploads: Sequence[tuple[Upload, str]]) -> list[BaseException | None]:
        # One syncfs for the group instead of an fsync per file, where that is as durable and
        # reports the same errors (see storage.group_sync).
        local = [upload for upload, _ in uploads if isinstance(upload, _LocalUpload)]
        if not self._group_sync or len(uploads) < 2 or len(local) != len(uploads):
            return super().prepare_group(uploads)
        failures: list[BaseException | None] = []
        for upload, (_, sha256) in zip(local, uploads, strict=True):
            try:
                upload.prepare(sha256, sync=False)
            except Exception as exc:
                failures.append(exc)
            else:
                failures.append(None)
        ready = [upload for upload, failure in zip(local, failures, strict=True) if not failure]
        if not ready:
            return failures
        try:
            # the first ready upload's descriptor was opened before any of their bytes were
            # written, so a write-back error on any of them is reported here
            group_sync.sync(ready[0].descriptor)
        except OSError as exc:
            for upload in ready:
                upload.abort()
            return [
                failure or _os_error(exc, upload.path)
                for upload, failure in zip(local, failures, strict=True)
            ]
        for upload in ready:
            upload.close_descriptor()
        return failures

    def make_durable(self, paths: Iterable[ArtifactPath]) -> None:
        for parent in sorted({path.parent for path in paths}):
            try:
                self._sync_dir(self._resolve(parent))
            except FileNotFoundError:
                continue  # deleted since: nothing left to make durable

    def sweep_incomplete_uploads(self, older_than: float) -> int:
        """Removes temporary files left by uploads that died with their server (SIGKILL, crash).

        A file whose owner mark says its process is dead goes at once (`owners`); one without
        an owner (a resumable upload's kept bytes, or a file from before owner marks) only once
        untouched for `older_than` seconds. Live processes' files stay, whatever their age.
        """
        surveyed = time.time()
        dead, live = owners.survey(self._root)
        cutoff = surveyed - older_than
        removed = 0
        for directory, dirs, files in os.walk(self._root):
            dirs[:] = [d for d in dirs if not d.startswith(RESERVED_PREFIX)]
            for name in files:
                if not name.startswith(_TEMP_PREFIX):
                    continue
                owner = owners.owner_of(name, _TEMP_PREFIX)
                full = os.path.join(directory, name)
                try:
                    if owner in dead or _abandoned(owner, live, os.lstat(full), surveyed, cutoff):
                        os.unlink(full)
                        removed += 1
                except FileNotFoundError:
                    pass
        return removed


WRITEBACK_EVERY = 8 * 1024 * 1024
"""With fsync on, an upload asks the kernel to start writing its file to disk every this many
bytes (`sync_file_range`, without waiting), so the disk works while the next bytes arrive and
the fsync before publishing waits only for the tail. Otherwise nothing is written back before
that fsync: the kernel's background writeback starts only at a tenth of RAM in dirty pages."""


class _LocalUpload(Upload):
    def __init__(
        self,
        storage: LocalStorage,
        path: ArtifactPath,
        fd: int,
        temp: str,
        target: str,
        created_dirs: list[str],
        *,
        keep: bool = False,
        written: int = 0,
    ) -> None:
        self._storage = storage
        self._path = path
        self._fd: int | None = fd
        self._temp: str | None = temp
        self._target = target
        self._created = created_dirs
        self._keep = keep  # a resumable upload: an abort keeps the bytes for a later resume
        self._writer = directio.SequentialWriter(fd, position=written, direct=storage._direct_io)
        self._early_writeback = storage._fsync and writeback.AVAILABLE
        self._not_yet_written_back = 0
        self._stat: os.stat_result | None = None  # set by prepare: the bytes are final

    def write(self, data: bytes | memoryview) -> None:
        fd = self._fd
        if fd is None:
            raise RuntimeError("upload already finished")
        try:
            self._writer.write(data)
            if self._early_writeback and not self._writer.direct:
                self._not_yet_written_back += len(data)
                if self._not_yet_written_back >= WRITEBACK_EVERY:
                    self._not_yet_written_back = 0
                    writeback.start_writeback(fd)
        except OSError as exc:
            raise _os_error(exc, self._path) from exc

    @property
    def path(self) -> ArtifactPath:
        return self._path

    @property
    def descriptor(self) -> int:
        if self._fd is None:
            raise RuntimeError("upload already finished")
        return self._fd

    def prepare(self, sha256: str, *, sync: bool = True) -> None:
        """`sync=False`: the caller makes the bytes durable (`LocalStorage.prepare_group`) and
        then calls `close_descriptor`."""
        fd = self._fd
        if fd is None:
            raise RuntimeError("upload already finished")
        try:
            self._writer.finish()
            st = os.fstat(fd)
            _write_digest(fd, sha256, st)  # checked against size and mtime when read
            self._stat = st
            if not sync:
                return
            if self._storage._fsync:
                os.fsync(fd)
            self.close_descriptor()
        except OSError as exc:
            self.abort()
            raise _os_error(exc, self._path) from exc
        except BaseException:
            self.abort()
            raise

    def close_descriptor(self) -> None:
        """Closes the file once its bytes are final and durable; publishing needs only its name."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def commit(self, sha256: str, *, overwrite: bool, durable: bool = True) -> Entry:
        if self._stat is None:
            self.prepare(sha256)
        self.close_descriptor()  # prepared by a group: closed there, unless publishing came first
        temp, st = self._temp, self._stat
        if temp is None or st is None:
            raise RuntimeError("upload already finished")
        try:
            if overwrite:
                _replace_file(temp, self._target)
            else:
                os.link(temp, self._target)
                os.unlink(temp)
            self._temp = None
            if durable:
                self._storage._sync_dir(os.path.dirname(self._target))
        except FileExistsError:
            self.abort()
            if os.path.isdir(self._target):  # link(2) says EEXIST for a directory too
                raise _is_a_directory(self._path) from None
            raise already_exists(self._path) from None
        except OSError as exc:
            self.abort()
            if exc.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                raise _is_a_directory(self._path) from exc
            raise _os_error(exc, self._path) from exc
        except BaseException:
            self.abort()
            raise
        return Entry(self._path, False, st.st_size, st.st_mtime_ns, sha256)

    def abort(self) -> None:
        # Each release is independent of the others: a failure freeing the write buffer must
        # not keep the descriptor open or the temporary file on disk.
        try:
            self._writer.close()
        finally:
            self._release()

    def _release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._keep:
            self._temp = None
            return
        if self._temp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)
            self._temp = None
            remove_empty_dirs(self._created)
            self._created = []


class _LocalReader(FileReader):
    def __init__(self, fd: int, entry: Entry, *, direct: bool) -> None:
        self._fd: int | None = fd
        self.entry = entry
        self._direct = direct

    def chunks(self, offset: int, limit: int, chunk_size: int) -> Iterator[bytes]:
        fd = self._fd
        if fd is None:
            raise RuntimeError("reader is closed")
        end = self.entry.size if limit == 0 else min(self.entry.size, offset + limit)
        position = offset
        if (
            self._direct
            and end - offset >= directio.DIRECT_AFTER
            and not directio.mostly_cached(fd, offset, end)
        ):
            chunks: Iterator[bytes] = directio.read_chunks(fd, offset, end, chunk_size)
        else:
            chunks = _plain_chunks(fd, offset, end, chunk_size)
        for data in chunks:
            position += len(data)
            yield data
        if position < end:
            raise DataLoss(
                f"'{self.entry.path}' shrank to {position} bytes while being read "
                f"(it was {self.entry.size}); it was modified outside artifactd"
            )

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _abandoned(
    owner: str | None, live: set[str], st: os.stat_result, surveyed: float, cutoff: float
) -> bool:
    """Whether a temporary file no live process will finish: without an owner, untouched
    since `cutoff`; with one that was not live at the survey, older than the survey (a
    process that took its mark after the survey has only newer files)."""
    if owner is None:
        return st.st_mtime < cutoff
    return owner not in live and st.st_mtime < surveyed - 1.0


def _plain_chunks(fd: int, position: int, end: int, chunk_size: int) -> Iterator[bytes]:
    while position < end:
        data = os.pread(fd, min(chunk_size, end - position), position)
        if not data:
            return
        position += len(data)
        yield data


def _entry(path: ArtifactPath, real: str, st: os.stat_result) -> Entry:
    if stat.S_ISDIR(st.st_mode):
        return Entry(path, True, 0, st.st_mtime_ns)
    try:
        digest = _parse_digest(os.getxattr(real, DIGEST_XATTR), st)
    except OSError:
        digest = None
    return Entry(path, False, st.st_size, st.st_mtime_ns, digest)


def _write_digest(fd: int, sha256: str, st: os.stat_result) -> None:
    try:
        os.setxattr(fd, DIGEST_XATTR, f"{sha256} {st.st_size} {st.st_mtime_ns}".encode())
    except OSError as exc:
        if exc.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            raise
        # The filesystem keeps no extended attributes: the digest is checked, not remembered.


def _read_digest(fd: int, st: os.stat_result) -> str | None:
    try:
        return _parse_digest(os.getxattr(fd, DIGEST_XATTR), st)
    except OSError:
        return None


def _parse_digest(raw: bytes, st: os.stat_result) -> str | None:
    try:
        digest, size, mtime = raw.decode().split(" ")
    except (UnicodeDecodeError, ValueError):
        return None
    if size != str(st.st_size) or mtime != str(st.st_mtime_ns):
        return None  # the file changed after artifactd wrote it: the digest no longer describes it
    return digest


def _remove_tree(target: str) -> None:
    """rmtree that tolerates uploads creating temporary files in the tree while it runs."""
    for attempt in range(5):
        try:
            shutil.rmtree(target)
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY or attempt == 4:
                raise


_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _replace_file(temp: str, target: str) -> None:
    """Publishes `temp` as `target`, replacing a file there but refusing a directory, or a
    symlink to one (IsADirectoryError), which os.replace alone would swap out.

    A small upload is not checked for a directory in its place before its bytes
    (`PRECHECKED_FROM`), so the check happens here, without a stat in the common case: a
    rename that only creates a new name (RENAME_NOREPLACE) is tried first, and a name already
    there is looked at only then. Where the flag is not supported (EINVAL, ENOSYS), the stat."""
    renameat2 = libc.function(
        "renameat2", ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint
    )
    if renameat2 is not None:
        flags = _RENAME_NOREPLACE
        if renameat2(_AT_FDCWD, os.fsencode(temp), _AT_FDCWD, os.fsencode(target), flags) == 0:
            return
        code = libc.errno_of_last_call()
        if code not in (errno.EEXIST, errno.EINVAL, errno.ENOSYS):
            libc.raise_errno(code, target)
    if os.path.isdir(target):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), target)
    os.replace(temp, target)


def _is_a_directory(path: ArtifactPath) -> FailedPrecondition:
    """Refusing a file upload onto a directory: before the bytes (`_create_temp`), or at the
    publish for a small upload or a directory made meanwhile."""
    return FailedPrecondition(f"'{path}' is a directory; a file cannot replace it")


def _os_error(exc: OSError, path: ArtifactPath) -> Exception:
    """Maps an OS error to the artifactd error a client can act on."""
    code = exc.errno
    if code == errno.ENOENT:
        return NotFound(f"'{path}' does not exist")
    if code == errno.ENOTDIR:
        return NotFound(f"'{path}' does not exist (a parent is a file)")
    if code == errno.EISDIR:
        return FailedPrecondition(f"'{path}' is a directory")
    if code == errno.ELOOP:
        return PermissionDenied(f"'{path}' is a symbolic link; artifactd does not follow it")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionDenied(f"the server may not access '{path}': {exc.strerror}")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"no space left for '{path}' on the artifact store")
    if code == errno.ENAMETOOLONG:
        return InvalidArgument(f"'{path}' is too long for the artifact store's filesystem")
    return Unavailable(f"storage error on '{path}': {exc.strerror or exc}")
