"""Making a group of newly written files durable in one pass: syncfs(2) where that is as durable
as an fsync of each file, and where it reports their write-back errors as fsync would.

Why it is as durable: `syncfs` writes back every dirty page and inode of the filesystem and
waits for them (`sync_inodes_sb` with WB_SYNC_ALL), then asks the filesystem to commit its
journal and flush the device's cache (`->sync_fs(sb, wait=1)`): what an fsync does for one
file, done for all of them at once. Where it reports errors: since Linux 5.8 a write-back
error on any file of the filesystem is recorded on the superblock too, and `syncfs(fd)` returns
it if it happened after `fd` was opened; the caller passes the descriptor of the group's first
file, opened before any of the group's bytes were written. Older kernels return success
regardless, so there the group falls back to an fsync per file.

Which filesystems: those whose `sync_fs` commits their journal (ext4, ext3, xfs, btrfs,
f2fs) and tmpfs (nothing to make durable). Elsewhere, NFS and FUSE among them, whether a
`syncfs` commits every file's data to the server is the filesystem's business: an fsync per
file, the documented contract, is kept there.

Measured here (ext4 on a virtio disk, 1,000 files of 16 KiB): an fsync per file 200-220 ms,
8 threads of fsyncs 90-130 ms, one syncfs per 32 files 19 ms in all.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

from artifactd_server.storage import libc

FILESYSTEMS = frozenset({"ext4", "ext3", "xfs", "btrfs", "f2fs", "tmpfs"})
_FIRST_KERNEL_REPORTING_ERRORS = (5, 8)


def _syncfs() -> Any | None:
    return libc.function("syncfs", ctypes.c_int)


def _kernel_reports_errors(release: str) -> bool:
    try:
        major, minor = (int(part) for part in release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= _FIRST_KERNEL_REPORTING_ERRORS


def filesystem_type(path: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """The type of the filesystem `path` lives on (the longest mount point above it)."""
    real = os.path.realpath(path)
    best, best_type = "", None
    try:
        with open(mountinfo, encoding="utf-8") as lines:
            for line in lines:
                fields = line.split(" - ", 1)
                if len(fields) != 2:
                    continue
                mount_point = _unescaped(fields[0].split()[4])
                kind = fields[1].split()[0]
                inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
                if inside and len(mount_point) >= len(best):
                    best, best_type = mount_point, kind
    except OSError:
        return None
    return best_type


def _unescaped(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def available(root: str) -> bool:
    """Whether groups of files under `root` may be made durable by one `sync`."""
    return (
        _syncfs() is not None
        and _kernel_reports_errors(os.uname().release)
        and filesystem_type(root) in FILESYSTEMS
    )


def sync(fd: int) -> None:
    """syncfs(2) on the filesystem of `fd`; raises OSError as fsync would."""
    function = _syncfs()
    if function is None:
        raise OSError(0, "syncfs is not available")
    if function(fd) != 0:
        libc.raise_errno(libc.errno_of_last_call())
