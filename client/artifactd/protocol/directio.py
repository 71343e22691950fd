"""Writing and reading large files around the page cache (Linux `O_DIRECT`).

A large artifact is written once and fsynced before it is published, so its copy in the page
cache only costs: each new page must be allocated (and, on a VM that hands idle memory back to
its host, faulted back in from the host), filled, then written back by the fsync anyway. Measured
here for 1 GiB plus fsync: 2.8-2.9 s buffered into memory idle for a few seconds, 0.44-0.52 s
buffered into memory freed a moment before, 0.47-0.61 s with `O_DIRECT` in either state, at a
third of the CPU. So after its first `DIRECT_AFTER` bytes a file's data go through an aligned
buffer straight to the disk, and a large file not in the cache is read back the same way. Where
the filesystem refuses `O_DIRECT` (some FUSE and network filesystems) both fall back to ordinary
I/O: the same bytes either way.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from typing import cast

ALIGNMENT = 4096
"""Offsets, lengths and buffer addresses of direct writes are multiples of this: the largest
logical block size of common disks, so it suits 512-byte ones too."""

BUFFER_SIZE = 4 * 1024 * 1024
"""Bytes per direct write (dd here: 4 MiB blocks as fast as 16 MiB ones, or faster)."""

DIRECT_AFTER = 8 * 1024 * 1024
"""Bytes written the ordinary way first: small files keep the page cache (a directory of
thousands of small files would pay a disk round trip per file), and large ones switch."""

_O_DIRECT: int = getattr(os, "O_DIRECT", 0)


class SequentialWriter:
    """Appends to an open file descriptor, switching to direct writes once the file is large.

    Writes must be sequential from `position`, the file's current end (0 for a new file; the
    kept size for an append-only one being resumed). `finish` writes what is still buffered and
    must be called before the descriptor is fsynced or closed; `close` releases the buffer
    without writing it.
    """

    def __init__(self, fd: int, *, position: int = 0, direct: bool = True) -> None:
        self._fd = fd
        self._position = position
        self._switch_at = _align_up(max(DIRECT_AFTER, position))
        self._may_switch = direct
        self._buffer: mmap.mmap | None = None  # page-aligned, as direct writes need
        self._filled = 0

    @property
    def direct(self) -> bool:
        """Whether data now go around the page cache."""
        return self._buffer is not None

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data).cast("B")
        if self._buffer is None:
            if self._may_switch and self._position + len(view) > self._switch_at:
                head = self._switch_at - self._position
                self._write_all(view[:head])
                view = view[head:]
                self._start_direct()
            if self._buffer is None:
                self._write_all(view)
                return
        while view:
            buffer = self._buffer
            if buffer is None:  # direct writes were refused midway: the rest the ordinary way
                self._write_all(view)
                return
            taken = min(len(view), BUFFER_SIZE - self._filled)
            buffer[self._filled : self._filled + taken] = view[:taken]
            self._filled += taken
            view = view[taken:]
            if self._filled == BUFFER_SIZE:
                self._flush()

    def finish(self) -> None:
        """Writes the buffered rest: its aligned part directly, the tail the ordinary way."""
        if self._buffer is None:
            return
        self._flush()
        self.close()

    def close(self) -> None:
        """Leaves direct mode and frees the buffer; data still buffered are dropped."""
        buffer, self._buffer = self._buffer, None
        self._filled = 0
        if buffer is not None:
            with contextlib.suppress(OSError):
                _set_direct(self._fd, False)
            # A view of the buffer may outlive a failed write in that exception's traceback;
            # the buffer is then freed with the last view, not here.
            with contextlib.suppress(BufferError):
                buffer.close()

    def _start_direct(self) -> None:
        if _try_direct(self._fd):
            self._buffer = mmap.mmap(-1, BUFFER_SIZE)
        else:
            self._may_switch = False  # this filesystem has no direct I/O: stay buffered

    def _flush(self) -> None:
        buffer = self._buffer
        assert buffer is not None
        filled, self._filled = self._filled, 0
        aligned = filled - filled % ALIGNMENT
        with memoryview(buffer) as whole, whole[:aligned] as head, whole[aligned:filled] as tail:
            self._write_direct(head)
            if tail:  # only at finish: a tail shorter than one block
                _set_direct(self._fd, False)
                self._write_all(tail)
        if not self._may_switch:
            self.close()

    # Both writers slice with `with`: a slice of the direct buffer left in a failed write's
    # traceback (a full disk) would keep the buffer exported, and closing it would then fail.

    def _write_direct(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            with view[done:] as rest:
                try:
                    written = os.write(self._fd, rest)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self._may_switch:
                        raise
                    # Refused by the filesystem after all (an alignment it wants larger): what
                    # is not yet written goes the ordinary way, and no more direct writes.
                    _set_direct(self._fd, False)
                    self._may_switch = False
                    continue
            self._position += written
            done += written

    def _write_all(self, view: memoryview) -> None:
        done = 0
        while done < len(view):
            with view[done:] as rest:
                written = os.write(self._fd, rest)
            self._position += written
            done += written


def read_chunks(fd: int, start: int, end: int, chunk_size: int) -> Iterator[bytes]:
    """The bytes `start` to `end` of a file, in chunks, read around the page cache.

    For large files that are not in the page cache (see `mostly_cached`): reading them the
    ordinary way would allocate a page-cache page per 4 KiB, which on this VM costs as much as
    writing did. A second thread reads the next 4 MiB block while this one's chunks are sent.
    Stops early, without error, if the file ends before `end` (the caller reports it).
    """
    direct = _try_direct(fd)  # if not: ordinary reads, the same bytes
    ahead = _ReadAhead(fd)
    buffers = (mmap.mmap(-1, BUFFER_SIZE), mmap.mmap(-1, BUFFER_SIZE))
    position = start - start % ALIGNMENT
    try:
        ahead.request(buffers[0], position)
        current = 0
        while True:
            got = ahead.result()
            block_end = position + got
            if got == BUFFER_SIZE and block_end < end:
                ahead.request(buffers[1 - current], block_end)
            last = min(end, block_end)
            with memoryview(buffers[current]) as view:
                for offset in range(max(start, position), last, chunk_size):
                    stop = min(offset + chunk_size, last)
                    yield bytes(view[offset - position : stop - position])  # slice freed at once
            if got < BUFFER_SIZE or block_end >= end:
                return
            position, current = block_end, 1 - current
    finally:
        ahead.close()
        for buffer in buffers:
            buffer.close()
        if direct:
            with contextlib.suppress(OSError):
                _set_direct(fd, False)


class _ReadAhead:
    """One thread reading into the buffer it is handed, one request at a time."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._requests: queue.SimpleQueue[tuple[mmap.mmap, int] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[int | BaseException] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="read-ahead", daemon=True)
        self._thread.start()

    def request(self, buffer: mmap.mmap, position: int) -> None:
        self._requests.put((buffer, position))

    def result(self) -> int:
        outcome = self._results.get()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def close(self) -> None:
        """Waits for a read in progress (it may be filling a buffer about to be freed)."""
        self._requests.put(None)
        self._thread.join()

    def _serve(self) -> None:
        while (job := self._requests.get()) is not None:
            buffer, position = job
            try:
                self._results.put(os.preadv(self._fd, [buffer], position))
            except BaseException as exc:  # raised on the reading thread
                self._results.put(exc)


def mostly_cached(fd: int, start: int, end: int) -> bool:
    """Whether 90 % of the bytes `start` to `end` are in the page cache; False where that cannot
    be told. A large file read often stays in the cache, and reading it from there beats reading
    it from disk."""
    fraction = cached_fraction(fd, start, end)
    return fraction is not None and fraction >= 0.9


def cached_fraction(fd: int, start: int, end: int) -> float | None:
    """The share of the pages of bytes `start` to `end` in the page cache (Linux 6.5's
    `cachestat`), or None where the kernel cannot tell."""
    if _cachestat is None or end <= start:
        return None
    request = _CachestatRange(start, end - start)
    answer = _Cachestat()
    if _cachestat(_CACHESTAT, fd, ctypes.byref(request), ctypes.byref(answer), 0) != 0:
        return None
    pages = -(-(end - start) // mmap.PAGESIZE)
    cached: int = answer.nr_cache
    return min(1.0, cached / pages)


class _CachestatRange(ctypes.Structure):
    _fields_ = (("off", ctypes.c_uint64), ("len", ctypes.c_uint64))


class _Cachestat(ctypes.Structure):
    _fields_ = tuple(
        (name, ctypes.c_uint64)
        for name in ("nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")
    )


_CACHESTAT = 451  # the same number on every architecture with the generic syscall table


def _load_cachestat() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        syscall = ctypes.CDLL(None, use_errno=True).syscall
    except (OSError, AttributeError):
        return None
    syscall.restype = ctypes.c_long
    return cast("Callable[..., int]", syscall)


_cachestat = _load_cachestat()


def _try_direct(fd: int) -> bool:
    """Turns O_DIRECT on for `fd`; False where the platform or the filesystem has none."""
    if not _O_DIRECT:
        return False
    try:
        _set_direct(fd, True)
    except OSError:
        return False
    return True


def _set_direct(fd: int, on: bool) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | _O_DIRECT if on else flags & ~_O_DIRECT)


def _align_up(value: int) -> int:
    return -(-value // ALIGNMENT) * ALIGNMENT
