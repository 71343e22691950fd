"""MLflow's own tracking server and UI on artifactd, in both modes, against real processes.

Mode A: `mlflow server --default-artifact-root artifactd://HOST:PORT/mlflow-a
--no-serve-artifacts`; MLflow clients (this process, with the plugin) transfer directly, and the
tracking server reads through the plugin for its UI's endpoints. Mode B: `mlflow server
--artifacts-destination artifactd://HOST:PORT/mlflow-b`; a client without the plugin goes
through MLflow's proxy, and the bytes land in artifactd.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.artifacts
import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from mlflow.version import VERSION as MLFLOW_VERSION
from packaging.version import Version

from .conftest import QUIET_MLFLOW, MlflowServer
from .proxied_client import Doubler, digests
from conftest import write_random
from servers import ServerProcess

HERE = Path(__file__).parent
UI_TEXT = f"artifactd preview {uuid.uuid4().hex[:8]}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as reply:  # noqa: S310  (http://127.0.0.1 only)
        return bytes(reply.read())


def ui_list(server: MlflowServer, run_id: str, path: str = "") -> list[dict[str, Any]]:
    """The UI's artifact listing endpoint."""
    query = urllib.parse.urlencode({"run_id": run_id, "path": path})
    body = json.loads(http_get(f"{server.url}/ajax-api/2.0/mlflow/artifacts/list?{query}"))
    return list(body.get("files", []))


def ui_get(server: MlflowServer, run_id: str, path: str) -> bytes:
    """The UI's artifact download endpoint."""
    query = urllib.parse.urlencode({"path": path, "run_uuid": run_id})
    return http_get(f"{server.url}/get-artifact?{query}")


def stored_files(root: Path) -> dict[str, str]:
    """Files under an artifactd root, by relative path (artifactd's own bookkeeping left out)."""
    if not root.exists():
        return {}
    return {k: v for k, v in digests(root).items() if not k.startswith(".artifactd")}


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "data" / "nested").mkdir(parents=True)
    write_random(src / "weights.bin", 3 * 1024 * 1024 + 17)
    write_random(src / "data" / "part-0.bin", 200_000)
    (src / "data" / "nested" / "labels.csv").write_text("id,label\n1,cat\n2,dog\n")
    return src


@pytest.fixture
def tracking(server_a: MlflowServer) -> Iterator[MlflowServer]:
    mlflow.set_tracking_uri(server_a.url)
    yield server_a
    mlflow.set_tracking_uri("")


def log_everything(sources: Path) -> tuple[str, str, str]:
    """Logs a file, a directory, a text and a model in a new run; (experiment, run, model id)."""
    experiment = mlflow.create_experiment(f"a-{uuid.uuid4().hex[:8]}")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifact(str(sources / "weights.bin"))
        mlflow.log_artifacts(str(sources / "data"), "data")
        mlflow.log_text(UI_TEXT, "hello.txt")
        model = mlflow.pyfunc.log_model(
            name="model", python_model=Doubler(), pip_requirements=["mlflow"]
        )
    return experiment, run.info.run_id, model.model_id


def test_the_mlflow_tested_is_a_current_release() -> None:
    # pip backtracking to mlflow 1.x (issue 20) must fail here, not pass quietly
    assert Version(MLFLOW_VERSION) >= Version("3.17"), MLFLOW_VERSION


def test_mode_a_logs_to_artifactd_and_the_ui_endpoints_serve_it_bit_identical(
    tracking: MlflowServer, artifactd: ServerProcess, sources: Path, tmp_path: Path
) -> None:
    experiment, run_id, model_id = log_everything(sources)
    run = MlflowClient().get_run(run_id)
    assert run.info.artifact_uri == (
        f"artifactd://{artifactd.target}/mlflow-a/{experiment}/{run_id}/artifacts"
    )
    # the bytes are in artifactd's root
    on_disk = stored_files(artifactd.root / "mlflow-a" / experiment / run_id / "artifacts")
    expected = digests(sources) | {"hello.txt": sha256(UI_TEXT.encode())}
    assert on_disk == expected

    # the UI's endpoints list and serve them, read by the tracking server through the plugin
    top = {(f["path"], f["is_dir"]) for f in ui_list(tracking, run_id)}
    assert top == {("weights.bin", False), ("data", True), ("hello.txt", False)}
    nested = ui_list(tracking, run_id, "data/nested")
    labels = sources / "data" / "nested" / "labels.csv"
    assert [(f["path"], int(f["file_size"])) for f in nested] == [
        ("data/nested/labels.csv", labels.stat().st_size)
    ]
    for path, digest in expected.items():
        assert sha256(ui_get(tracking, run_id, path)) == digest, path

    # MLflow's own download and model loading on runs:/ and models:/ URIs
    got = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/data", dst_path=str(tmp_path / "d"))
    assert digests(Path(got)) == digests(sources / "data")
    frame = pd.DataFrame({"x": [1, 2, 3]})
    for uri in (f"models:/{model_id}", f"runs:/{run_id}/model"):
        assert mlflow.pyfunc.load_model(uri).predict(frame)["x"].tolist() == [2, 4, 6], uri
    location = mlflow.get_logged_model(model_id).artifact_location
    assert location.startswith(f"artifactd://{artifactd.target}/mlflow-a/{experiment}/models/")
    model_files = stored_files(artifactd.root / "mlflow-a" / experiment / "models" / model_id)
    assert "artifacts/MLmodel" in model_files


def run_gc(server: MlflowServer) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "gc",
            "--backend-store-uri",
            server.backend_store_uri,
            "--tracking-uri",
            server.url,
        ],
        env={**os.environ, **QUIET_MLFLOW, "MLFLOW_TRACKING_URI": server.url},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.mark.parametrize("mode", ["A", "B"])
def test_mlflow_gc_removes_a_deleted_runs_artifacts_and_its_logged_models(
    server_a: MlflowServer,
    server_b: MlflowServer,
    artifactd: ServerProcess,
    sources: Path,
    mode: str,
) -> None:
    server, prefix = (server_a, "mlflow-a") if mode == "A" else (server_b, "mlflow-b")
    mlflow.set_tracking_uri(server.url)
    try:
        experiment, doomed, doomed_model = log_everything(sources)
        _, kept, kept_model = log_everything(sources)
    finally:
        mlflow.set_tracking_uri("")
    base = artifactd.root / prefix
    run_dir = base / experiment / doomed / "artifacts"
    assert stored_files(run_dir), "the run's artifacts were logged into artifactd"
    client = MlflowClient(server.url)
    client.delete_run(doomed)
    client.delete_logged_model(doomed_model)  # a run's deletion leaves its models (MLflow's rule)
    result = run_gc(server)
    assert f"Run with ID {doomed} has been permanently deleted" in result.stdout
    assert stored_files(run_dir) == {}, "mlflow gc left the deleted run's artifacts behind"
    assert stored_files(base / experiment / "models" / doomed_model) == {}, (
        "mlflow gc left the deleted logged model's artifacts behind (mlflow/mlflow#17240)"
    )
    # what was not deleted is untouched
    kept_experiment = client.get_run(kept).info.experiment_id
    assert stored_files(base / kept_experiment / kept / "artifacts") == (
        digests(sources) | {"hello.txt": sha256(UI_TEXT.encode())}
    )
    assert "artifacts/MLmodel" in stored_files(base / kept_experiment / "models" / kept_model)


def test_mode_b_a_client_without_the_plugin_logs_and_downloads_through_mlflow(
    server_b: MlflowServer, artifactd: ServerProcess, sources: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "no-plugin"
    (blocker / "artifactd").mkdir(parents=True)
    (blocker / "artifactd" / "__init__.py").write_text(
        "raise ImportError('this client runs without artifactd')\n"
    )
    result = subprocess.run(
        [sys.executable, str(HERE / "proxied_client.py"), server_b.url, str(sources),
         str(tmp_path / "out")],
        env={**os.environ, **QUIET_MLFLOW, "PYTHONPATH": str(blocker)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["plugin_importable"] is False
    experiment, run_id = report["experiment_id"], report["run_id"]
    assert report["artifact_uri"].startswith("mlflow-artifacts:")
    assert report["predictions"] == [[2, 4, 6], [2, 4, 6]]
    logged = digests(sources)
    assert report["downloaded"] == logged
    # the bytes landed in artifactd, under the server's destination
    assert stored_files(artifactd.root / "mlflow-b" / experiment / run_id / "artifacts") == logged
    model_files = stored_files(
        artifactd.root / "mlflow-b" / experiment / "models" / report["model_id"]
    )
    assert "artifacts/MLmodel" in model_files
    # and the UI's endpoints serve them from there
    for path, digest in logged.items():
        assert sha256(ui_get(server_b, run_id, path)) == digest, path


CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def test_the_mlflow_ui_in_a_browser_lists_and_previews_artifacts(
    tracking: MlflowServer, sources: Path, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    for binary in (CHROMIUM, CHROMEDRIVER):
        assert os.access(binary, os.X_OK), f"{binary} missing: apt-get install chromium-driver"
    experiment, run_id, _ = log_everything(sources)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",  # nothing but loopback
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(f"{tracking.url}/#/experiments/{experiment}/runs/{run_id}/artifacts")

        def rendered_text_contains(text: str, timeout: float = 60.0) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if text in driver.find_element(By.TAG_NAME, "body").text:
                    return True
                time.sleep(0.3)
            return False

        for name in ("weights.bin", "data", "hello.txt"):
            assert rendered_text_contains(name), f"the artifact list never showed {name}"
        entry = driver.find_element(By.XPATH, "//*[normalize-space(text())='hello.txt']")
        entry.click()
        assert rendered_text_contains(UI_TEXT), "the text artifact's preview never appeared"
    except AssertionError:
        driver.save_screenshot(str(tmp_path / "mlflow-ui.png"))
        raise
    finally:
        driver.quit()
