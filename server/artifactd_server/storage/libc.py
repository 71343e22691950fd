"""The C library's system calls that Python's `os` module has no binding for (syncfs,
sync_file_range, renameat2), loaded one way for the storage modules that use them."""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any, NoReturn


@functools.cache
def function(name: str, *argtypes: type[Any]) -> Any | None:
    """libc's `name`, taking `argtypes` and returning an int with errno kept for
    `raise_errno`; None where the C library has no such function (musl, macOS, old glibc)."""
    try:
        found = ctypes.CDLL(None, use_errno=True)[name]  # its own object: argtypes are its own
    except (OSError, AttributeError):
        return None
    found.argtypes = argtypes
    found.restype = ctypes.c_int
    return found


def errno_of_last_call() -> int:
    """The errno the last `function` call on this thread set."""
    return ctypes.get_errno()


def raise_errno(code: int, *filename: str) -> NoReturn:
    """Raises what a failed call set in errno as the OSError `os` would have raised."""
    raise OSError(code, os.strerror(code), *filename)
