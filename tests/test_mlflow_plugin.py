"""The MLflow plugin with the real `mlflow` package: MLflow's own tracking store (SQLite, in this
process, no MLflow server), an experiment whose artifact location is `artifactd://host:port/...`,
and a real artifactd server process whose storage root the tests read to see the bytes arrive.

mlflow is imported unconditionally: without it (`pip install -e '.[dev,mlflow]'`) these tests
fail, they do not skip.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import (
    get_artifact_repository,
    get_registered_artifact_repositories,
)
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

from artifactd.client import ReservedStorageVariableWarning, TrackingClient
from artifactd.client import target as client_target
from artifactd.mlflow import ArtifactdArtifactRepository
from artifactd.mlflow.entry_point import artifactd_repository

from conftest import sha256_of, write_random
from servers import ServerProcess, start_server


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """The smallest model that proves a round trip: it doubles its input."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return model_input * 2


@pytest.fixture(scope="module")
def artifactd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of its own: the tests look at its storage root and collect garbage on it."""
    base = tmp_path_factory.mktemp("artifactd-mlflow")
    process = start_server(base / "store", base / "run")
    yield process
    code = process.stop()
    assert code == 0, f"server exited with {code}:\n{process.log_text()}"


@pytest.fixture(scope="module")
def tracking_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """MLflow's tracking store: a SQLite file in a temporary directory (migrated once)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow-db') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def mlflow_state(
    tracking_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Each test runs in its own directory (MLflow's ./mlruns, temp files) on the module's
    tracking database, with telemetry off and no cached artifact repositories."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_db)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setattr(client_target, "_warned", set())  # warnings seen fresh in each test
    mlflow.set_tracking_uri(tracking_db)
    tracking_utils._artifact_repos_cache.clear()
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    for repo in tracking_utils._artifact_repos_cache.values():
        if isinstance(repo, ArtifactdArtifactRepository):
            repo.close()
    tracking_utils._artifact_repos_cache.clear()
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]


@pytest.fixture
def experiment(artifactd_server: ServerProcess, prefix: str) -> tuple[str, str]:
    """(MLflow experiment id, its artifactd path) for a fresh experiment on artifactd."""
    location = f"artifactd://{artifactd_server.target}/{prefix}"
    experiment_id = mlflow.create_experiment(f"exp-{prefix}", artifact_location=location)
    return experiment_id, prefix


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Any]:
    """A file of several chunks, and a directory tree with an empty file and unicode names."""
    weights = tmp_path / "src" / "weights.bin"
    digest = write_random(weights, 3 * 1024 * 1024 + 17)
    tree = tmp_path / "src" / "data"
    write_random(tree / "a.bin", 1000)
    write_random(tree / "sub" / "b.bin", 70_000)
    write_random(tree / "sub" / "deeper" / "ünïcode c.txt", 12)
    (tree / "empty.txt").write_bytes(b"")
    return {"weights": weights, "weights_sha256": digest, "tree": tree}


def tree_digests(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `root`."""
    return {
        p.relative_to(root).as_posix(): sha256_of(p) for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_the_entry_point_registers_the_artifactd_scheme() -> None:
    names = {ep.name: ep.value for ep in entry_points(group="mlflow.artifact_repository")}
    assert names["artifactd"] == "artifactd.mlflow.entry_point:artifactd_repository"
    assert get_registered_artifact_repositories()["artifactd"] is artifactd_repository
    repo = get_artifact_repository("artifactd://127.0.0.1:50999/some/root/")
    assert isinstance(repo, ArtifactdArtifactRepository)
    assert (repo.target, str(repo.root)) == ("127.0.0.1:50999", "some/root")
    repo.close()  # never opened: connecting is lazy


@pytest.mark.parametrize(
    "first", ["import artifactd.mlflow", "import artifactd.mlflow.repository", "import mlflow"]
)
def test_the_scheme_is_registered_whichever_is_imported_first(first: str) -> None:
    # importing the plugin before MLflow once left the scheme unregistered (a circular import
    # through MLflow's entry-point loading, reported only as a warning)
    program = (
        f"{first}\n"
        "import mlflow\n"
        "from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository\n"
        "from artifactd.mlflow import ArtifactdArtifactRepository\n"
        "repo = get_artifact_repository('artifactd://127.0.0.1:50999/r')\n"
        "assert isinstance(repo, ArtifactdArtifactRepository), repo\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error::UserWarning", "-c", program],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_file_directory_and_model_round_trip_through_mlflow(
    artifactd_server: ServerProcess,
    experiment: tuple[str, str],
    sources: dict[str, Any],
    tmp_path: Path,
) -> None:
    experiment_id, prefix = experiment
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_artifact(str(sources["weights"]))
        mlflow.log_artifact(str(sources["weights"]), artifact_path="copies/v1")
        mlflow.log_artifacts(str(sources["tree"]), artifact_path="data")
        model_info = mlflow.pyfunc.log_model(name="model", python_model=Doubler())
    run_id = run.info.run_id
    location = f"artifactd://{artifactd_server.target}/{prefix}/{run_id}/artifacts"
    assert run.info.artifact_uri == location

    # the bytes are on artifactd's storage, at MLflow's layout under the experiment's path
    stored = artifactd_server.root / prefix / run_id / "artifacts"
    assert sha256_of(stored / "weights.bin") == sources["weights_sha256"]
    assert sha256_of(stored / "copies" / "v1" / "weights.bin") == sources["weights_sha256"]
    assert tree_digests(stored / "data") == tree_digests(sources["tree"])
    model_id = model_info.model_id
    model_store = artifactd_server.root / prefix / "models" / model_id / "artifacts"
    assert (model_store / "MLmodel").is_file()
    assert (model_store / "python_model.pkl").is_file()

    # listing: direct children, paths relative to the run's root, sizes for files only
    client = MlflowClient()
    top = client.list_artifacts(run_id)
    assert [(f.path, f.is_dir) for f in top] == [
        ("copies", True),
        ("data", True),
        ("weights.bin", False),
    ]
    assert top[2].file_size == sources["weights"].stat().st_size
    assert top[0].file_size is None
    data = client.list_artifacts(run_id, "data")
    assert [(f.path, f.is_dir, f.file_size) for f in data] == [
        ("data/a.bin", False, 1000),
        ("data/empty.txt", False, 0),
        ("data/sub", True, None),
    ]
    assert client.list_artifacts(run_id, "weights.bin") == []  # a file: MLflow's contract
    assert client.list_artifacts(run_id, "no/such/dir") == []

    # downloads: a file, a directory, the whole run; bit-identical
    one = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="weights.bin", dst_path=str(tmp_path / "dl1")
    )
    assert one == str(tmp_path / "dl1" / "weights.bin")
    assert sha256_of(Path(one)) == sources["weights_sha256"]
    tree = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path="data", dst_path=str(tmp_path / "dl2")
    )
    assert tree == str(tmp_path / "dl2" / "data")
    assert tree_digests(Path(tree)) == tree_digests(sources["tree"])
    everything = Path(client.download_artifacts(run_id, "", str(tmp_path / "dl3")))
    assert tree_digests(everything) == tree_digests(stored)
    by_uri = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/data/sub", dst_path=str(tmp_path / "dl4")
    )
    assert tree_digests(Path(by_uri)) == tree_digests(sources["tree"] / "sub")

    # the model: its files downloaded equal what artifactd stores, and it loads and predicts
    model_dir = Path(
        mlflow.artifacts.download_artifacts(model_info.model_uri, dst_path=str(tmp_path / "m"))
    )
    downloaded, stored_model = tree_digests(model_dir), tree_digests(model_store)
    assert {name: downloaded.get(name) for name in stored_model} == stored_model
    assert set(downloaded) - set(stored_model) <= {"registered_model_meta"}  # MLflow adds it
    frame = pd.DataFrame({"x": [1.0, 2.5, -3.0]})
    for uri in (model_info.model_uri, f"runs:/{run_id}/model"):
        predicted = mlflow.pyfunc.load_model(uri).predict(frame)
        assert predicted["x"].tolist() == [2.0, 5.0, -6.0]


def test_repository_paths_errors_and_deletes(
    artifactd_server: ServerProcess, prefix: str, sources: dict[str, Any], tmp_path: Path
) -> None:
    root_uri = f"artifactd://{artifactd_server.target}/{prefix}/repo"
    repo = get_artifact_repository(root_uri)
    assert isinstance(repo, ArtifactdArtifactRepository)
    try:
        repo.log_artifact(str(sources["weights"]), "a/b/")  # MLflow callers add slashes
        repo.log_artifacts(str(sources["tree"]))
        assert (artifactd_server.root / prefix / "repo" / "a" / "b" / "weights.bin").is_file()
        assert repo._is_directory("a") and not repo._is_directory("a/b/weights.bin")
        assert not repo._is_directory("missing")

        for bad in ("../escape", "/abs", "a/../../x", "c:/x", "a\\b"):
            with pytest.raises(MlflowException) as caught:
                repo.log_artifact(str(sources["weights"]), bad)
            assert caught.value.error_code == "INVALID_PARAMETER_VALUE", bad
        assert not (artifactd_server.root / prefix / "escape").exists()

        # one file to exactly the path asked for (MLflow's trace helpers use this)
        exact = tmp_path / "x" / "renamed.bin"
        repo._download_file("a/b/weights.bin", str(exact))
        assert sha256_of(exact) == sources["weights_sha256"]
        assert [p.name for p in exact.parent.iterdir()] == ["renamed.bin"]

        with pytest.raises(MlflowException) as caught:
            repo.download_artifacts("no/such/file", str(tmp_path))
        assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
        with pytest.raises(MlflowException) as caught:
            repo.download_artifacts("a", str(tmp_path / "not-there"))
        assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"

        # delete a file, then a tree; idempotent
        repo.delete_artifacts("a/b/weights.bin")
        assert repo.list_artifacts("a/b") == []
        repo.delete_artifacts("sub")
        repo.delete_artifacts("sub")
        assert [f.path for f in repo.list_artifacts()] == ["a", "a.bin", "empty.txt"]
        repo.delete_artifacts()  # the repository's root, as `mlflow gc` does for a run
        assert repo.list_artifacts() == []
        assert not (artifactd_server.root / prefix / "repo").exists()
        (tmp_path / "nothing").mkdir()
        empty = repo.download_artifacts("", str(tmp_path / "nothing"))  # MLflow: the empty dst
        assert empty == str(tmp_path / "nothing")
    finally:
        repo.close()

    whole = get_artifact_repository(f"artifactd://{artifactd_server.target}")
    with pytest.raises(MlflowException) as caught:
        whole.delete_artifacts()
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_garbage_collection_in_artifactd_is_what_mlflow_sees(
    artifactd_server: ServerProcess, prefix: str, sources: dict[str, Any], tmp_path: Path
) -> None:
    """An artifactd experiment owns the location an MLflow experiment writes to: deleting it in
    artifactd (soft) leaves MLflow's artifacts readable; collecting it removes them, and MLflow
    then lists nothing and cannot download or load anything."""
    with TrackingClient(artifactd_server.target) as tracking:
        owner = tracking.create_experiment(f"owner-{prefix}", artifact_location=prefix)
        experiment_id = mlflow.create_experiment(
            f"gc-{prefix}", artifact_location=f"artifactd://{artifactd_server.target}/{prefix}"
        )
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifact(str(sources["weights"]))
            mlflow.log_artifacts(str(sources["tree"]), artifact_path="data")
            model_info = mlflow.pyfunc.log_model(name="model", python_model=Doubler())
        run_id = run.info.run_id
        client = MlflowClient()
        assert [f.path for f in client.list_artifacts(run_id)] == ["data", "weights.bin"]
        on_disk = artifactd_server.root / prefix
        assert (on_disk / run_id / "artifacts" / "weights.bin").is_file()

        tracking.delete_experiment(owner.experiment_id)
        # soft: still readable through MLflow
        assert [f.path for f in client.list_artifacts(run_id)] == ["data", "weights.bin"]
        kept = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="weights.bin", dst_path=str(tmp_path / "soft")
        )
        assert sha256_of(Path(kept)) == sources["weights_sha256"]

        events = list(tracking.collect_garbage(experiment_ids=[owner.experiment_id]))
        summary = events[-1]
        assert getattr(summary, "experiments_collected", None) == 1, events
        assert getattr(summary, "failed", None) == 0, events

    assert not on_disk.exists()
    tracking_utils._artifact_repos_cache.clear()  # a fresh repository sees the same
    for view in (client, MlflowClient()):
        assert view.list_artifacts(run_id) == []
        assert view.list_artifacts(run_id, "data") == []
    for path in ("weights.bin", "data"):
        with pytest.raises(MlflowException) as caught:
            mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=str(tmp_path / "gone")
            )
        assert caught.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException):
        mlflow.pyfunc.load_model(model_info.model_uri)
    assert list((tmp_path / "gone").rglob("*")) == []  # nothing half-written


def test_mlflow_gc_deletes_a_runs_artifacts_on_artifactd(
    artifactd_server: ServerProcess,
    experiment: tuple[str, str],
    sources: dict[str, Any],
    tracking_db: str,
) -> None:
    """The other direction: a run deleted in MLflow and collected by `mlflow gc` loses its
    artifacts on artifactd, through the plugin's delete; the run next to it keeps its own."""
    experiment_id, prefix = experiment
    run_ids = []
    for _ in range(2):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifacts(str(sources["tree"]), artifact_path="data")
        run_ids.append(run.info.run_id)
    doomed, kept = run_ids
    MlflowClient().delete_run(doomed)
    from mlflow.cli import gc

    result = CliRunner().invoke(
        gc, ["--backend-store-uri", tracking_db, "--tracking-uri", tracking_db,
             "--run-ids", doomed],
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert not (artifactd_server.root / prefix / doomed / "artifacts").exists()
    stored = artifactd_server.root / prefix / kept / "artifacts" / "data"
    assert tree_digests(stored) == tree_digests(sources["tree"])
    assert [f.path for f in MlflowClient().list_artifacts(kept)] == ["data"]


def test_client_side_storage_variables_redirect_nothing(
    artifactd_server: ServerProcess,
    experiment: tuple[str, str],
    sources: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLFLOW_S3_ENDPOINT_URL and friends on the MLflow client change nothing: the bytes go to
    artifactd's storage, the client warns once naming them, and strict mode refuses."""
    experiment_id, prefix = experiment
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("MLFLOW_DEFAULT_ARTIFACT_ROOT", str(tmp_path / "elsewhere2"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifact(str(sources["weights"]), artifact_path="w")
        listed = MlflowClient().list_artifacts(run.info.run_id, "w")
    reserved = [w for w in caught if issubclass(w.category, ReservedStorageVariableWarning)]
    assert len(reserved) == 1, [str(w.message) for w in caught]
    assert "MLFLOW_S3_ENDPOINT_URL" in str(reserved[0].message)
    assert [f.path for f in listed] == ["w/weights.bin"]
    stored = artifactd_server.root / prefix / run.info.run_id / "artifacts" / "w" / "weights.bin"
    assert sha256_of(stored) == sources["weights_sha256"]
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "elsewhere2").exists()
    assert not Path("mlruns").exists()  # MLflow's local default was not used either

    monkeypatch.setenv("ARTIFACTD_STRICT_ENV", "1")
    with mlflow.start_run(experiment_id=experiment_id) as run:
        with pytest.raises(MlflowException) as refused:
            mlflow.log_artifact(str(sources["weights"]))
        assert refused.value.error_code == "INVALID_PARAMETER_VALUE"
        assert "MLFLOW_S3_ENDPOINT_URL" in refused.value.message
    assert not (artifactd_server.root / prefix / run.info.run_id).exists()


def test_inside_a_tracking_server_only_its_own_artifactd_is_contacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """MLflow's host policy for host-addressed schemes, applied to artifactd:// (nothing is
    contacted: the repository connects lazily, and the refusal comes first)."""
    own = "artifactd://127.0.0.1:50123/mlflow"
    other = "artifactd://127.0.0.2:50123/x"
    get_artifact_repository(other).close()  # a client process: any server
    monkeypatch.setenv("_MLFLOW_SERVER_ARTIFACT_ROOT", own)
    with pytest.raises(MlflowException) as caught:
        get_artifact_repository(other)
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert "MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES" in caught.value.message
    get_artifact_repository(f"{own}/1/abc/artifacts").close()
    get_artifact_repository("artifactd:/relative/to/the/configured/server").close()
    monkeypatch.setenv("MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES", "s3,artifactd")
    get_artifact_repository(other).close()
