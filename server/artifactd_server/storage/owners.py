"""Which server process a temporary upload file belongs to, and whether that process lives.

An upload's temporary file survives its server when the process dies (SIGKILL, OOM, a crash),
and a server in a crash loop would fill the disk with them if only their age (a day) let them
go. So each process writing to a local root takes an owner mark: a file under
`<root>/.artifactd-owners/` that it holds a POSIX lock on for as long as it lives, and whose id
is part of every temporary file it creates. The kernel (or the NFS lock manager) drops the lock
when the process dies, however it dies; a start-up sweep that can take an owner's lock knows
that owner is dead and removes its files. Several workers or replicas sharing a root each hold
their own mark, so none removes another's live uploads.

POSIX locks belong to a process, not to a descriptor: a second lock attempt by the holder on
the same file succeeds, and closing any descriptor of the file drops the holder's lock. Hence
one mark per process and root (`for_root`), and the sweep never tests this process's own.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import threading
import uuid

from artifactd.protocol.paths import RESERVED_PREFIX

log = logging.getLogger(__name__)

OWNERS_DIR = f"{RESERVED_PREFIX}owners"
_SUFFIX = ".lock"


class OwnerMark:
    """This process's held lock on `<root>/.artifactd-owners/<id>.lock`."""

    def __init__(self, root: str) -> None:
        directory = os.path.join(root, OWNERS_DIR)
        os.makedirs(directory, exist_ok=True)
        self.id = uuid.uuid4().hex[:16]
        self.pid = os.getpid()
        self._uploads = itertools.count()
        self._path = os.path.join(directory, f"{self.id}{_SUFFIX}")
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(self._fd, f"pid {self.pid}\n".encode())

    def upload_name(self) -> str:
        """`<owner id>-<n>`, a name no other upload of any process takes: the id is this
        process's, `n` counts its uploads. (A uuid4 per file cost a `getrandom`, which gives
        the GIL away, on the thread receiving a directory upload.)"""
        return f"{self.id}-{next(self._uploads):x}"

    def release(self) -> None:
        """Removes the mark and drops its lock: this process writes no more temporary files
        under the root (a server stopping after its transfers ended)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
        os.close(self._fd)
        with contextlib.suppress(OSError):  # others' marks still there: it stays
            os.rmdir(os.path.dirname(self._path))


_marks: dict[str, OwnerMark] = {}
_lock = threading.Lock()


def for_root(root: str) -> OwnerMark:
    """This process's mark on `root`, taken on first use (after a spawn or fork, anew)."""
    with _lock:
        mark = _marks.get(root)
        if mark is None or mark.pid != os.getpid():
            mark = _marks[root] = OwnerMark(root)
        return mark


def release(root: str) -> None:
    """Gives up this process's mark on `root`, if it took one."""
    with _lock:
        mark = _marks.get(root)
        if mark is None or mark.pid != os.getpid():
            return
        del _marks[root]
    mark.release()


def survey(root: str) -> tuple[set[str], set[str]]:
    """(dead, live) owner ids under `root`. Dead owners' marks are removed here, so remove
    their files right after; an owner in neither set had its mark removed by an earlier sweep
    (dead too), or took it after this survey (its files are newer than the survey)."""
    directory = os.path.join(root, OWNERS_DIR)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return set(), set()
    with _lock:
        mine = {mark.id for mark in _marks.values() if mark.pid == os.getpid()}
    dead: set[str] = set()
    live = set(mine)
    for name in names:
        owner = name.removesuffix(_SUFFIX)
        if not name.endswith(_SUFFIX) or owner in mine:
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            live.add(owner)  # held: that process is alive
            continue
        finally:
            os.close(fd)
        dead.add(owner)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return dead, live


def owner_of(name: str, prefix: str) -> str | None:
    """The owner id in a temporary file's name `<prefix><owner>-<token>`; None for names
    without one (resumable uploads' kept bytes, which outlive their server on purpose, and
    files of versions before owner marks)."""
    rest = name[len(prefix) :]
    owner, sep, _token = rest.partition("-")
    return owner if sep and owner else None
