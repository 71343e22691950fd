"""Fixtures and helpers for tests of experiments, runs and GC: a server on each backend store.

Registered as a plugin by conftest.py, so every test module can ask for `store_server`, `runs`
and `artifacts`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc

from servers import ServerProcess, start_server


@pytest.fixture(scope="session")
def store_server(
    database_uri: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """An artifactd process on the session database of one backend, with a second root."""
    base = tmp_path_factory.mktemp("runs-server")
    extra = base / "extra-root"
    extra.mkdir()
    process = start_server(
        base / "store", base / "run",
        "--backend-store-uri", database_uri, "--extra-artifact-root", str(extra),
    )  # fmt: skip
    yield process
    code = process.stop()
    assert code == 0, f"server exited with {code}:\n{process.log_text()}"


@pytest.fixture
def channel(store_server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(store_server.target) as ch:
        yield ch


@pytest.fixture
def runs(channel: grpc.Channel) -> rpb_grpc.RunServiceStub:
    return rpb_grpc.RunServiceStub(channel)


@pytest.fixture
def artifacts(channel: grpc.Channel) -> pb_grpc.ArtifactServiceStub:
    return pb_grpc.ArtifactServiceStub(channel)


def new_experiment(runs: rpb_grpc.RunServiceStub, location: str = "") -> rpb.Experiment:
    request = rpb.CreateExperimentRequest(
        name=f"exp-{uuid.uuid4().hex}", artifact_location=location
    )
    return runs.CreateExperiment(request, timeout=10).experiment


def new_run(runs: rpb_grpc.RunServiceStub, experiment_id: str) -> rpb.Run:
    return runs.CreateRun(rpb.CreateRunRequest(experiment_id=experiment_id), timeout=10).run


def put(
    artifacts: pb_grpc.ArtifactServiceStub, path: str, data: bytes, run_id: str = ""
) -> pb.FileInfo:
    messages = [
        pb.LogArtifactRequest(header=pb.UploadHeader(path=path, size=len(data), run_id=run_id)),
        pb.LogArtifactRequest(data=data, finish=pb.UploadFinish()),
    ]
    return artifacts.LogArtifact(iter(messages), timeout=10).file


def get(artifacts: pb_grpc.ArtifactServiceStub, path: str, run_id: str = "") -> bytes:
    request = pb.DownloadArtifactRequest(path=path, run_id=run_id)
    return b"".join(m.data for m in artifacts.DownloadArtifact(request, timeout=10))


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        if callable(call):
            result = call()
            if hasattr(result, "__iter__") and not isinstance(result, bytes):
                list(result)
    return err.value.code()
