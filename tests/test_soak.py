"""The soak (bench/soak.py) in its CI size: 32 clients of mixed, verified operations for two
minutes against a real server; and proof that the soak's checks can fail.

Why here and not only as a bench script: memory or descriptor growth, a lost file or an
INTERNAL under concurrency are regressions a change can bring in at any time, and two minutes
of 32 clients on two cores exercise every operation thousands of times. The longer runs
(`--minutes 30`) are recorded in bench/results/soak-*.json.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from servers import start_server

BENCH = Path(__file__).resolve().parent.parent / "bench"
SECONDS = float(os.environ.get("ARTIFACTD_SOAK_SECONDS", "120"))


def run_soak(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """bench/soak.py with `args` (which name `--json`): its process and its result."""
    out = Path(args[args.index("--json") + 1])
    done = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert out.exists(), f"no result written:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done, json.loads(out.read_text())


def test_32_clients_for_two_minutes_lose_nothing_and_do_not_grow(tmp_path: Path) -> None:
    done, result = run_soak(
        "--clients", "32", "--seconds", str(SECONDS), "--json", str(tmp_path / "soak.json"),
        timeout=SECONDS + 240,
    )  # fmt: skip
    print(done.stdout)
    assert done.returncode == 0, f"{result['failures']}\n{done.stderr[-3000:]}"
    assert result["verdict"] == "PASS" and result["violations"] == []
    operations = result["operations"]
    for kind in ("log", "log_dir", "download", "download_dir", "list", "stat", "delete",
                 "resumable", "final_list", "final_download"):  # fmt: skip
        assert operations[kind]["count"] >= 10, (kind, operations[kind])
    assert result["operations_total"] >= 1000
    assert len(result["samples"]) >= 20
    assert set(result["errors_by_code"]) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}, result


def test_the_soak_fails_when_files_vanish_behind_the_servers_back(tmp_path: Path) -> None:
    """Files removed from the root during a short soak: the clients' models notice."""
    root = tmp_path / "store"
    server = start_server(root, tmp_path / "run")
    stop = threading.Event()

    def vandal() -> None:
        while not stop.wait(0.5):
            for found in root.glob("soak-*/c*/f*.bin"):
                found.unlink(missing_ok=True)
                break

    thread = threading.Thread(target=vandal)
    thread.start()
    try:
        done, result = run_soak(
            "--clients", "4", "--seconds", "15", "--target", server.target,
            "--server-pid", str(server.process.pid), "--json", str(tmp_path / "soak.json"),
            timeout=180,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
        assert server.stop() == 0
    assert done.returncode == 1, done.stdout[-3000:]
    assert result["violations"] and any("lost or corrupt" in f for f in result["failures"])
    assert any("missing" in v for v in result["violations"]), result["violations"][:5]
