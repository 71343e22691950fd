"""MkDocs hooks (mkdocs.yml `hooks:`): the benchmark plots, drawn when the site is built.

The PNGs come from the newest bench/results/*.json through bench/plot_results.py and are added
to the site as generated files: they are never written into docs/ nor committed (binary output
of a plotting library does not belong in git), yet every build, `mkdocs serve` included, shows
the current run and `--strict` checks the links to them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

BENCH = Path(__file__).resolve().parent.parent / "bench"


def on_files(files: Files, config: Any) -> Files:
    sys.path.insert(0, str(BENCH))
    try:
        import plot_results
    finally:
        sys.path.remove(str(BENCH))
    result = plot_results.load(plot_results.newest_result())
    for name, data in plot_results.plots(result).items():
        files.append(File.generated(config, f"assets/benchmarks/{name}", content=data))
    return files
