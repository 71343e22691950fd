"""Starting a file's writeback without waiting for it: Linux's `sync_file_range`, through libc.

Python's `os` has no binding for it. Elsewhere (or without glibc) `start_writeback` does nothing
and the fsync before publishing does all the writing, as it would anyway.
"""

from __future__ import annotations

import ctypes
import errno
from collections.abc import Callable

from artifactd_server.storage import libc

_SYNC_FILE_RANGE_WRITE = 2


def _load() -> Callable[[int], None] | None:
    function = libc.function(
        "sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint
    )
    if function is None:
        return None

    def start(fd: int) -> None:
        if function(fd, 0, 0, _SYNC_FILE_RANGE_WRITE) != 0:
            code = libc.errno_of_last_call()
            if code != errno.ENOSYS:  # a kernel without it: the fsync does the work
                libc.raise_errno(code)

    return start


_start = _load()
AVAILABLE = _start is not None


def start_writeback(fd: int) -> None:
    """Asks the kernel to begin writing the file's dirty pages to disk; returns without waiting.

    Raises OSError on an I/O error the kernel already knows of."""
    if _start is not None:
        _start(fd)
