"""Server accounting and shutdown over a whole process tree, read from Linux /proc (stdlib only).

`mlflow server` is a tree (the CLI, uvicorn's supervisor and workers, a job runner and its
consumers), so figures for a single PID would miss most of its work and memory; artifactd is one
process, and the same code then simply finds a tree of one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """Fields after the command name, which may itself contain spaces and parentheses."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def tree_pids(root: int) -> list[int]:
    """`root` and its descendants, parents before children."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                children.setdefault(int(_stat_fields(int(name))[1]), []).append(int(name))
    order, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        order.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return order


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def peak_rss(pid: int) -> int:
    """VmHWM in bytes: the peak resident set since the process started or was last reset."""
    return _status_kib(pid, "VmHWM") * 1024


def pss(pid: int) -> int:
    """Proportional set size in bytes: shared pages split, so a tree's sum is not inflated."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak_rss(pid: int) -> bool:
    """Writing 5 to clear_refs resets VmHWM to the current RSS, so a peak belongs to one window."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _safe_int(read: Callable[[int], int], pid: int) -> int:
    try:
        return read(pid)
    except (OSError, ValueError, IndexError):
        return 0


def _safe_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass
class TreeUsage:
    cpu_s: float
    peak_rss_max: int
    peak_rss_sum: int
    pss_after: int
    nproc: int
    rss_reset: bool
    sampled_anon_max: int = 0
    sampled_file_max: int = 0


class TreeWatch:
    """CPU seconds and peak RSS of a process tree over one window (one timed command)."""

    def __init__(self, root: int, sample_every: float = 0.0) -> None:
        self.root = root
        self._cpu0: dict[int, float] = {}
        self._reset_ok = False
        self._every = sample_every
        self._done = threading.Event()
        self._sampler: threading.Thread | None = None
        self._anon_max = self._file_max = 0

    def start(self) -> None:
        pids = tree_pids(self.root)
        self._reset_ok = all([reset_peak_rss(pid) for pid in pids])
        self._cpu0 = {pid: _safe_cpu(pid) for pid in pids}
        if self._every > 0:
            self._sampler = threading.Thread(target=self._sample, args=(pids,), daemon=True)
            self._sampler.start()

    def _sample(self, pids: list[int]) -> None:
        """VmHWM says how high RSS went, not of what: polling RssAnon and RssFile tells heap and
        buffers apart from mapped files (libraries, mmapped data)."""
        while not self._done.wait(self._every):
            anon = sum(_safe_int(lambda p: _status_kib(p, "RssAnon") * 1024, p) for p in pids)
            mapped = sum(_safe_int(lambda p: _status_kib(p, "RssFile") * 1024, p) for p in pids)
            self._anon_max = max(self._anon_max, anon)
            self._file_max = max(self._file_max, mapped)

    def stop(self) -> TreeUsage:
        self._done.set()
        if self._sampler is not None:
            self._sampler.join()
        pids = tree_pids(self.root)
        peaks = [_safe_int(peak_rss, pid) for pid in pids]
        return TreeUsage(
            cpu_s=sum(_safe_cpu(pid) - self._cpu0.get(pid, 0.0) for pid in pids),
            peak_rss_max=max(peaks, default=0),
            peak_rss_sum=sum(peaks),
            pss_after=sum(_safe_int(pss, pid) for pid in pids),
            nproc=len(pids),
            rss_reset=self._reset_ok,
            sampled_anon_max=self._anon_max,
            sampled_file_max=self._file_max,
        )


def stop_tree(root: int, grace: float = 20.0) -> None:
    """SIGTERM the tree by PID (children first, so a supervisor does not respawn them), then
    SIGKILL whatever is still there after `grace` seconds."""
    pids = [pid for pid in tree_pids(root) if alive(pid)]
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
