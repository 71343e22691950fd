"""Helpers shared by the driver and the per-system client scripts (stdlib only).

The client scripts run in different virtual environments (artifactd's and MLflow's), so anything
they share has to be importable without either package; this module is found because Python puts
the running script's own folder on `sys.path`.
"""

from __future__ import annotations

import os
import re

_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KIB": 1 << 10,
    "KB": 1 << 10,
    "M": 1 << 20,
    "MIB": 1 << 20,
    "MB": 1 << 20,
    "G": 1 << 30,
    "GIB": 1 << 30,
    "GB": 1 << 30,
}

BENCH_LINE = re.compile(
    r"^BENCH metric=(?P<metric>\S+) seconds=(?P<seconds>[0-9.eE+-]+) "
    r"bytes=(?P<bytes>\d+) files=(?P<files>\d+)$"
)
"""One timed operation, printed by a client script and parsed by the driver: the client knows
when its operation started and ended, the driver only sees the whole process (imports included)."""


def parse_size(text: str) -> int:
    """Binary units throughout ('16KiB', '1GiB', '64M'): file sizes people type are powers of 2."""
    match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if match is None or match.group(2).upper() not in _UNITS:
        raise ValueError(f"not a size: {text!r} (examples: 16KiB, 64MiB, 1GiB)")
    return int(match.group(1)) * _UNITS[match.group(2).upper()]


def emit(metric: str, seconds: float, nbytes: int, files: int) -> None:
    print(f"BENCH metric={metric} seconds={seconds:.6f} bytes={nbytes} files={files}", flush=True)


def tree_stats(path: str) -> tuple[int, int]:
    """(files, bytes) of a file or a directory tree: a download is checked for completeness."""
    if os.path.isfile(path):
        return 1, os.path.getsize(path)
    files = total = 0
    for directory, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            total += os.path.getsize(os.path.join(directory, name))
    return files, total


def check_download(local: str, want_files: int, want_bytes: int) -> tuple[int, int]:
    """A throughput figure is only worth printing for a download that delivered everything."""
    got = tree_stats(local)
    if got != (want_files, want_bytes):
        raise SystemExit(
            f"incomplete download at {local}: {got[0]} files / {got[1]} bytes, "
            f"expected {want_files} / {want_bytes}"
        )
    return got
