"""A small real filesystem to fill: a tmpfs mounted for one test (needs root, as CI runs).

Disk-full tests need the kernel's own ENOSPC at whatever byte the write happens to reach, not
an injected error, so they run the server on this mount and fill it with `fill`.
"""

from __future__ import annotations

import errno
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs (tmpfs takes O_DIRECT since Linux 6.6)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"cannot mount a small tmpfs (root needed): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Writes a file into `directory` until its filesystem is full, then frees `leave` bytes
    (rounded to whole MiB) so that the next writer runs out part-way."""
    filler = directory / "filler"
    block = b"\0" * MiB
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        if leave:
            fh.truncate(max(0, fh.tell() - leave))
    return filler
