"""glibc malloc settings that measurably matter for moving gigabytes through Python gRPC.

On this machine kind, memory the kernel has taken back is slow to fault in again (the VM returns
idle pages to its host), so an allocator that trims and re-grows its heap for every 256 KiB
message pays that cost over and over; and one malloc arena per thread keeps freed buffers in
many places at once. Both knobs exist only in glibc; elsewhere these functions do nothing.
"""

from __future__ import annotations

import ctypes
import functools
import threading

from artifactd.protocol.environment import TUNE_MALLOC

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_tuned = False
_lock = threading.Lock()
TRIM_AFTER_BYTES = 256 * 1024 * 1024
"""Least bytes a server moves between two `malloc_trim` calls (see `IdleTrim`)."""


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """glibc, loaded once; None where there is none (musl, macOS)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - glibc's own functions, absent elsewhere
    except (OSError, AttributeError):
        return None
    return libc


def _mallopt(param: int, value: int) -> bool:
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(param, value))


def _malloc_trim() -> bool:
    libc = _glibc()
    return libc is not None and bool(libc.malloc_trim(0))


class IdleTrim:
    """Hands a server's free heap back to the kernel when its last transfer ends.

    `bound_server_heap` keeps up to 32 MiB of free heap per arena so that back-to-back messages
    reuse memory instead of faulting it in again; but what is kept after a transfer stays
    resident while the server is idle, and transfer after transfer the idle RSS crept up (a
    benchmark's 4 concurrent 1 GiB uploads, repeated after other work, peaked at 179, 187, 188
    and 192 MiB). `malloc_trim(0)` when no stream is left and at least `after_bytes` moved since
    the last trim returns it. One trim took 0.4 ms here; it runs as a stream's call ends, never
    while one is in progress, and a server moving many small files at once never trims between
    them.
    """

    def __init__(self, after_bytes: int = TRIM_AFTER_BYTES) -> None:
        self.after_bytes = after_bytes
        self.enabled = False
        self.trims = 0
        self._active = 0
        self._moved = 0
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self._active += 1

    def ended(self, moved: int) -> None:
        with self._lock:
            self._active -= 1
            self._moved += moved
            if not self.enabled or self._active > 0 or self._moved < self.after_bytes:
                return
            self._moved = 0
            self.trims += 1
        _malloc_trim()


idle_trim = IdleTrim()
"""The process's one heap, trimmed when its streams end (enabled by `bound_server_heap`)."""


def bound_server_heap(
    arenas: int = 2, mmap_threshold: int = 2 * 1024 * 1024, trim_threshold: int = 32 * 1024 * 1024
) -> bool:
    """Keeps a server's heap from holding many clients' freed message buffers.

    Call before threads allocate. With one arena per thread and glibc's dynamic mmap threshold
    (which rises to 32 MiB after a few large frees), 4 concurrent 1 GiB uploads in 1 MiB messages
    peaked at 747 MiB RSS; with 2 arenas and buffers of 512 KiB or more always mmapped (and so
    returned when freed), 281 MiB, and faster (9.0 s instead of 16.3 s). False where not glibc.

    Up to `trim_threshold` of free heap per arena is kept instead of being handed back at once:
    with glibc's default (128 KiB) every freed 256 KiB message trimmed the heap and the next one
    faulted it back in, so serving a 1 GiB download cost 4.0-4.6 CPU-s, two thirds of it in the
    kernel; with 32 MiB kept, 1.7-1.8 CPU-s and 2.4-2.5 s instead of 4.1-4.7 s (uploads
    2.4-2.9 s -> 2.25-2.4 s), and 4 concurrent 1 GiB uploads peaked at 147 MB RSS. Buffers up to
    2 MiB come from the heap so that 1 MiB messages (the chunk size since) are reused too: 4
    concurrent 1 GiB uploads in 1 MiB messages peaked at 170 MB.
    """
    bounded = _mallopt(_M_ARENA_MAX, arenas) and _mallopt(_M_MMAP_THRESHOLD, mmap_threshold)
    bounded = bounded and _mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    idle_trim.enabled = bounded
    return bounded


def keep_transfer_buffers() -> None:
    """Lets freed message buffers be reused instead of returned to the kernel (once per process).

    Buffers below 4 MiB come from the heap, and up to 64 MiB of free heap is kept: values glibc's
    own dynamic thresholds reach anyway after a few large frees. Measured on a 1 GiB download:
    455-513 -> 543-600 MB/s, with less CPU. `ARTIFACTD_TUNE_MALLOC=0` leaves malloc alone.
    """
    global _tuned  # noqa: PLW0603 - a process-wide setting is applied once per process
    with _lock:
        if _tuned or (TUNE_MALLOC.get() or "1").strip().lower() in ("0", "false", "no"):
            return
        _tuned = True
    _mallopt(_M_MMAP_THRESHOLD, 4 * 1024 * 1024)
    _mallopt(_M_TRIM_THRESHOLD, 64 * 1024 * 1024)
