"""Tables and plots of the newest benchmark run, from its JSON in bench/results/.

bench/run_bench.py writes every run to bench/results/bench-<UTC time>.json (the history stays
there). This script turns the newest one into

* the headline table, written between the `<!-- bench:headline -->` markers of README.md and
  docs/benchmarks.md, and the detailed tables between the `<!-- bench:details -->` markers of
  docs/benchmarks.md (text: committed, and `--check` fails when they are not the newest run's);
* the newest run of bench/seaweedfs_bench.py (the CLI against boto3 on an S3 store), between
  the `<!-- bench:s3 -->` markers of docs/benchmarks.md;
* PNG plots (throughput, per-round ratios, CPU), made at build time by the docs site's hook
  (scripts/mkdocs_hooks.py) and never committed, or written to a folder with `--plots DIR`.

So the README and the docs show current figures only, and both come from the same JSON.
Needs matplotlib (the development venv has it): `.venv/bin/python bench/plot_results.py`.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
README = REPO / "README.md"
DOCS_PAGE = REPO / "docs" / "benchmarks.md"

KINDS = ("up", "down", "up_dir", "down_dir")
"""The four transfers every system runs, as run_bench.py labels them (`<system>_<kind>`)."""
HEADLINE_SYSTEMS = ("artifactd", "artifactd_cli", "mlflow", "cp", "cp_fsync")
DISPLAY = {
    "mlflow": "MLflow proxy",
    "cp": "cp",
    "cp_fsync": "cp + fsync",
    "artifactd": "artifactd",
    "artifactd_cli": "artifactd CLI",
}
DASH = "\u2013"  # en dash
ARROW = "\u2192"  # rightwards arrow
TIMES = "\u00d7"  # multiplication sign


def _loaded(path: Path) -> bool:
    """Whether a run had busy processes beside it (HOG=N)."""
    settings = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
    return bool(settings.get("hog"))


def _runs(results: Path, loaded: bool) -> list[Path]:
    """Runs on a quiet machine, or (`loaded`) with HOG busy processes; oldest first (file names
    carry the UTC time, so they sort by it)."""
    return [path for path in sorted(results.glob("bench-*.json")) if _loaded(path) == loaded]


def newest_result(results: Path = RESULTS) -> Path:
    """The newest run on a quiet machine."""
    runs = _runs(results, loaded=False)
    if not runs:
        raise SystemExit(f"no bench-*.json in {results}: run bench/run_bench.py first")
    return runs[-1]


def newest_loaded_result(results: Path = RESULTS) -> Path | None:
    """The newest run with busy processes beside it, if any."""
    runs = _runs(results, loaded=True)
    return runs[-1] if runs else None


def newest_s3_result(results: Path = RESULTS) -> Path | None:
    """The newest run of bench/seaweedfs_bench.py, if any."""
    runs = sorted(results.glob("seaweedfs-*.json"))
    return runs[-1] if runs else None


def load(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    result["file"] = path.name
    return result


def size_text(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} B"


def operations(result: dict[str, Any]) -> dict[str, str]:
    """Operation names as run_bench.py writes them into its verdicts."""
    s = result["settings"]
    big, small = size_text(s["size"]), f"{s['count']} {TIMES} {size_text(s['file_size'])}"
    return {
        "up": f"upload {big}",
        "down": f"download {big}",
        "up_dir": f"upload dir {small}",
        "down_dir": f"download dir {small}",
    }


def systems(result: dict[str, Any], kind: str) -> list[str]:
    """Systems measured for `kind`, in the order of the summary."""
    suffix = "_" + kind
    longer = [other for other in KINDS if len(other) > len(kind)]  # "up" vs "up_dir"
    found = []
    for label in result["summary"]:
        if label.endswith(suffix) and not any(label.endswith("_" + o) for o in longer):
            found.append(label[: -len(suffix)])
    return found


def display(system: str) -> str:
    return DISPLAY.get(system, system.replace("_", " "))


def throughput(result: dict[str, Any], system: str, kind: str) -> tuple[dict[str, float], str]:
    stats = result["summary"].get(f"{system}_{kind}") or {}
    if kind.endswith("_dir"):
        return stats.get("files_per_s", {}), "files/s"
    return stats.get("MBps", {}), "MB/s"


def ratio(
    result: dict[str, Any], kind: str, den: str, num: str = "artifactd"
) -> dict[str, Any] | None:
    for entry in result["ratios"]:
        if entry["kind"] == kind and entry.get("num") == num and entry["den"] == den:
            return dict(entry)
    return None


def target(result: dict[str, Any], kind: str, num: str = "artifactd") -> dict[str, Any] | None:
    """The run's verdict on artifactd ÷ MLflow for `kind` (the run_bench.py of that run set
    the goals, so they are read from the JSON rather than repeated here)."""
    for verdict in result["verdicts"]:
        operation, _, rest = verdict["name"].partition(": ")
        if (
            operation == operations(result)[kind]
            or operation.startswith(operations(result)[kind] + " with ")
        ) and rest == f"{display(num) if num != 'artifactd' else 'artifactd'} ÷ MLflow":
            return dict(verdict)
    return None


def goal(verdict: dict[str, Any]) -> str:
    return f"{verdict['goal']}: {'met' if verdict['passed'] else 'missed'}"


def figure(stat: dict[str, float], digits: int = 0) -> str:
    if not stat:
        return DASH
    return f"{stat['median']:.{digits}f}"


def spread(stat: dict[str, float], digits: int = 2) -> str:
    return f"{stat['min']:.{digits}f}{DASH}{stat['max']:.{digits}f}"


def run_line(result: dict[str, Any]) -> str:
    v, s = result["versions"], result["settings"]
    return (
        f"Run of {result['date']} on artifactd {v.get('artifactd_git', '?')} against MLflow "
        f"{v.get('mlflow', '?')}'s proxied artifact server and `cp`: {v.get('cpus', '?')} CPUs, "
        f"{s['runs']} recorded rounds, {load_average(result)}{_hogs(s)}; figures are medians, "
        f"ratios the median of the per-round ratios (min{DASH}max); "
        f"`{result['command']}` (`bench/results/{result['file']}`)."
    )


def load_average(result: dict[str, Any]) -> str:
    """The machine's load when the run started and when it ended, as the run recorded it."""
    before, after = result.get("loadavg_before", "?"), result.get("loadavg_after", "?")
    return f"load average {before} {ARROW} {after}"


def _hogs(settings: dict[str, Any]) -> str:
    hog = settings.get("hog", 0)
    return f", {hog} busy CPU-bound processes beside it (HOG)" if hog else ""


def headline(result: dict[str, Any]) -> str:
    """The table the README and the benchmarks page lead with: current figures only."""
    names = operations(result)
    shown = [system for system in HEADLINE_SYSTEMS if any(
        f"{system}_{kind}" in result["summary"] for kind in KINDS
    )]  # fmt: skip
    cli = "artifactd_cli" in shown
    header = [
        "operation",
        *(display(s) for s in shown),
        "artifactd ÷ MLflow",
        *(["CLI ÷ MLflow"] if cli else []),
        "target",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind in KINDS:
        cells = [names[kind]]
        unit = ""
        for system in shown:
            stat, unit = throughput(result, system, kind)
            cells.append(f"{figure(stat)} {unit}" if stat else DASH)
        for num in ("artifactd", "artifactd_cli") if cli else ("artifactd",):
            r = ratio(result, kind, "mlflow", num)
            cells.append(f"**{r['median']:.2f}x** ({spread(r)})" if r else DASH)
        t = target(result, kind)
        cells.append(goal(t) if t else DASH)
        lines.append("| " + " | ".join(cells) + " |")
    shown_verdicts = [target(result, kind, num) for kind in KINDS for num in shown]
    others = [v for v in result["verdicts"] if v not in shown_verdicts]
    text = "\n".join(lines) + "\n\n" + run_line(result)
    if others:
        text += " " + "; ".join(f"{v['name']}: {v['measured']} ({goal(v)})" for v in others) + "."
    return text + "\n"


def loaded_table(result: dict[str, Any] | None) -> str:
    """The newest run with busy processes beside it (HOG=N): its verdicts."""
    if result is None:
        return "No run with busy processes beside it (`HOG=2`) is recorded yet.\n"
    lines = [
        f"`{result['command']}` (`bench/results/{result['file']}`), "
        f"on artifactd {result['versions'].get('artifactd_git', '?')}, "
        f"{result['settings']['hog']} CPU-bound processes running throughout, "
        f"{load_average(result)}:",
        "",
        "| target | goal | measured | result |",
        "|---|---|---|---|",
    ]
    for v in result["verdicts"]:
        lines.append(
            f"| {v['name']} | {v['goal']} | {v['measured']} "
            f"| {'**met**' if v['passed'] else '**missed**'} |"
        )
    return "\n".join(lines) + "\n"


def s3_tables(result: dict[str, Any] | None) -> str:
    """The newest SeaweedFS run's tables, as seaweedfs_bench.py wrote them, under one line that
    names the run (its own title line would be a second page title)."""
    if result is None:
        return "No run of `bench/seaweedfs_bench.py` is recorded yet.\n"
    title, _, body = result["markdown"].partition("\n")
    script = "bench/seaweedfs_bench.py"
    run = title.lstrip("# ").replace(script, f"`{script}`", 1)
    return f"Newest run: {run} (`bench/results/{result['file']}`).\n{body.rstrip()}\n"


def details(result: dict[str, Any]) -> str:
    """Every system's figures and CPU per operation, and every verdict of the run."""
    names = operations(result)
    lines = [
        "| operation | system | seconds | throughput | client CPU s | server CPU s "
        "| server peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in KINDS:
        for system in systems(result, kind):
            stats = result["summary"][f"{system}_{kind}"]
            stat, unit = throughput(result, system, kind)
            server_cpu = stats.get("server_cpu_s")
            rss = stats.get("server_peak_rss_max_MiB")
            lines.append(
                f"| {names[kind]} | {display(system)} | {figure(stats['seconds'], 2)} "
                f"| {figure(stat)} {unit} | {figure(stats.get('client_cpu_s', {}), 2)} "
                f"| {figure(server_cpu, 2) if server_cpu else DASH} "
                f"| {figure(rss) if rss else DASH} |"
            )
    lines += ["", "| target | goal | measured | result |", "|---|---|---|---|"]
    for v in result["verdicts"]:
        lines.append(
            f"| {v['name']} | {v['goal']} | {v['measured']} "
            f"| {'**met**' if v['passed'] else '**missed**'} |"
        )
    return "\n".join(lines) + "\n"


# -- plots ---------------------------------------------------------------------------------------


COLORS = {"artifactd": "#3f51b5", "mlflow": "#ef6c00", "cp": "#9e9e9e"}


def plots(result: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes by file name. Rendered with the Agg backend and no timestamp or version in
    the metadata, so the same JSON gives the same bytes with the same matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    for name, draw in (
        ("throughput.png", _throughput_plot),
        ("ratios.png", _ratios_plot),
        ("cpu.png", _cpu_plot),
    ):
        fig = draw(plt, result)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
        plt.close(fig)
        out[name] = buffer.getvalue()
    return out


def _throughput_plot(plt: Any, result: dict[str, Any]) -> Any:
    names = operations(result)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for ax, kind in zip(axes.flat, KINDS, strict=True):
        found = systems(result, kind)
        values, lows, highs, unit = [], [], [], ""
        for system in found:
            stat, unit = throughput(result, system, kind)
            values.append(stat["median"])
            lows.append(stat["median"] - stat["min"])
            highs.append(stat["max"] - stat["median"])
        ax.barh(
            [display(s) for s in found],
            values,
            xerr=[lows, highs],
            color=[COLORS.get(s, "#7986cb") for s in found],
            capsize=3,
        )
        ax.set_title(names[kind], fontsize=10)
        ax.set_xlabel(f"{unit} (median, min{DASH}max), higher is better", fontsize=8)
        ax.invert_yaxis()
    fig.suptitle("Throughput per system", fontsize=12)
    fig.tight_layout()
    return fig


def _ratios_plot(plt: Any, result: dict[str, Any]) -> Any:
    from matplotlib.ticker import FuncFormatter

    names = operations(result)
    fig, ax = plt.subplots(figsize=(10, 4))
    for index, kind in enumerate(KINDS):
        r = ratio(result, kind, "mlflow")
        if r is None:
            continue
        rounds = r["per_round"]
        ax.scatter([index] * len(rounds), rounds, color=COLORS["artifactd"], zorder=3)
        ax.hlines(r["median"], index - 0.3, index + 0.3, color=COLORS["artifactd"], lw=2)
        t = target(result, kind)
        level = re.search(r"[\d.]+", t["goal"]) if t else None
        if level:
            ax.hlines(
                float(level.group()), index - 0.35, index + 0.35, color="#c62828", ls="--", lw=1.5
            )
    ax.set_xticks(range(len(KINDS)), [names[k] for k in KINDS], fontsize=8)
    ax.set_yscale("log")
    as_ratio = FuncFormatter(lambda value, _: f"{value:g}x")
    ax.yaxis.set_major_formatter(as_ratio)
    ax.yaxis.set_minor_formatter(as_ratio)
    ax.set_ylabel("artifactd \u00f7 MLflow (log scale)")
    ax.set_title("Per-round ratios (dots), their median (bar) and the target (dashed)")
    fig.tight_layout()
    return fig


def _cpu_plot(plt: Any, result: dict[str, Any]) -> Any:
    names = operations(result)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.8))
    for ax, kind in zip(axes, KINDS, strict=True):
        found = [s for s in systems(result, kind) if s != "cp" and not s.startswith("cp_")]
        stats = [result["summary"][f"{s}_{kind}"] for s in found]
        client = [stat["client_cpu_s"]["median"] for stat in stats]
        server = [(stat.get("server_cpu_s") or {}).get("median", 0.0) for stat in stats]
        labels = [display(s) for s in found]
        ax.bar(labels, client, color="#90caf9", label="client")
        ax.bar(labels, server, bottom=client, color="#1565c0", label="server")
        ax.set_title(names[kind], fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    axes[0].set_ylabel("CPU seconds (median)")
    axes[0].legend(fontsize=8)
    fig.suptitle("CPU per operation, client and server, lower is better", fontsize=11)
    fig.tight_layout()
    return fig


# -- the Markdown blocks -------------------------------------------------------------------------


def replace_block(text: str, marker: str, block: str, where: Path) -> str:
    """`text` with the part between `<!-- bench:MARKER -->` and `<!-- /bench:MARKER -->`
    replaced by `block`."""
    start, end = f"<!-- bench:{marker} -->", f"<!-- /bench:{marker} -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{where}: the markers {start} ... {end} are missing")
    return pattern.sub(lambda _: f"{start}\n{block}{end}", text)


def updated(
    result: dict[str, Any], loaded: dict[str, Any] | None, s3: dict[str, Any] | None = None
) -> dict[Path, str]:
    """README.md and docs/benchmarks.md with the newest runs' tables."""
    table = headline(result)
    readme = replace_block(README.read_text(encoding="utf-8"), "headline", table, README)
    page = replace_block(DOCS_PAGE.read_text(encoding="utf-8"), "headline", table, DOCS_PAGE)
    page = replace_block(page, "details", details(result), DOCS_PAGE)
    page = replace_block(page, "loaded", loaded_table(loaded), DOCS_PAGE)
    page = replace_block(page, "s3", s3_tables(s3), DOCS_PAGE)
    return {README: readme, DOCS_PAGE: page}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the tables are stale")
    parser.add_argument("--plots", type=Path, help="write the PNG plots into this folder")
    parser.add_argument("--result", type=Path, help="a run's JSON (default: the newest)")
    args = parser.parse_args(argv)
    result = load(args.result or newest_result())
    loaded_path = newest_loaded_result()
    loaded = load(loaded_path) if loaded_path is not None else None
    s3_path = newest_s3_result()
    s3 = load(s3_path) if s3_path is not None else None
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        for name, data in plots(result).items():
            (args.plots / name).write_bytes(data)
            print(f"wrote {args.plots / name}")
        return 0
    stale = []
    for path, text in updated(result, loaded, s3).items():
        if path.read_text(encoding="utf-8") != text:
            stale.append(path)
            if not args.check:
                path.write_text(text, encoding="utf-8")
                print(f"wrote the tables of {result['file']} into {path.relative_to(REPO)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(REPO)) for p in stale)
        print(
            f"{names}: benchmark tables are not those of {result['file']}: run "
            "bench/plot_results.py and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
