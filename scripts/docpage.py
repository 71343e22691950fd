"""What the page generators share: write a generated page, or with `--check` fail when stale.

Generated pages are committed (readable in the repository without building the site), so each
generator is run with `--check` by scripts/test.sh, and a change to its source without the
regenerated page fails CI.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(
    generator: str, page: Path, render: Callable[[], str], argv: Sequence[str] | None = None
) -> int:
    """Writes `render()` to `page`; with `--check`, exits 1 if the page differs from it.
    `generator` is the calling script's `__file__`: its docstring's first line is the usage."""
    script = Path(generator).resolve()
    parser = argparse.ArgumentParser(prog=script.name)
    parser.add_argument("--check", action="store_true", help="fail if the page is out of date")
    args = parser.parse_args(argv)
    text = render()
    name = page.relative_to(ROOT)
    if args.check:
        if not page.exists() or page.read_text(encoding="utf-8") != text:
            run = script.relative_to(ROOT)
            print(f"{name} is out of date: run {run} and commit the result", file=sys.stderr)
            return 1
        return 0
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
    print(f"wrote {name}")
    return 0
