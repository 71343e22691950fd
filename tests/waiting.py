"""Polling for a condition that another process or thread makes true, with a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float = 15.0, step: float = 0.05) -> bool:
    """Whether `condition()` became true within `timeout` seconds (checked once more at the
    deadline, so a slow last poll still counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return bool(condition())
