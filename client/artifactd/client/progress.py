"""Progress bars for transfers: tqdm's when they are shown, a silent stand-in when they are not.

Importing tqdm costs a CLI command 15-20 ms of start-up (its version module reads distribution
metadata), which is a twentieth of a 1,000-small-file upload through the CLI. A client that
shows no bar (the CLI when stderr is not a terminal, every library caller by default) never
imports it.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Protocol


class Progress(Protocol):
    """What the client does with a bar: tqdm's methods it calls, nothing more."""

    n: float

    def update(self, n: float = 1) -> bool | None: ...

    def refresh(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Progress: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class NoProgress:
    """The bar of a client that shows none: counts, draws nothing."""

    def __init__(self) -> None:
        self.n: float = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> NoProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        pass


def progress_bar(shown: bool, total: int | None, label: str, unit: str = "B") -> Progress:
    """A bar that appears only for transfers taking more than half a second, when `shown`."""
    if not shown:
        return NoProgress()
    from tqdm import tqdm  # only here: see the module docstring

    bar: Progress = tqdm(
        total=total,
        desc=os.path.basename(label.rstrip("/")) or label,
        unit=unit,
        unit_scale=unit == "B",
        unit_divisor=1024,
        delay=0.5,
        leave=False,
    )
    return bar
