"""HDFS-specific behaviour: how `hdfs://` destinations and MLflow's HDFS variables become
`pyarrow.fs.HadoopFileSystem` arguments, and what happens where no HDFS client can run.

No HDFS can run on these machines (no NameNode, no libhdfs: ../shared/reference/backends.md §6).
The adapter's storage logic runs in the conformance suite on pyarrow's local filesystem (the
`hdfs-pyarrow` backend); here `HadoopFileSystem` itself is replaced, for the one test that checks
the arguments it receives, by a recorder that hands back pyarrow's local filesystem.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from artifactd.protocol.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from artifactd.protocol.paths import parse
from artifactd_server.storage import open_storage
from artifactd_server.storage.hdfs import ArrowStorage, HDFSStorage, _ArrowFS, hadoop_settings

TIMEOUTS = {"dfs.client.socket-timeout": "60000", "ipc.client.connect.timeout": "60000"}


@pytest.mark.parametrize(
    ("destination", "host", "port", "root", "uri"),
    [
        ("hdfs://namenode:8020/ml/artifacts", "hdfs://namenode", 8020, "/ml/artifacts",
         "hdfs://namenode:8020/ml/artifacts"),
        ("hdfs://namenode/ml/", "hdfs://namenode", 0, "/ml", "hdfs://namenode/ml"),
        ("hdfs:///ml/artifacts", "default", 0, "/ml/artifacts", "hdfs:///ml/artifacts"),
        ("hdfs://nn:9000", "hdfs://nn", 9000, "/", "hdfs://nn:9000"),
        ("viewfs://cluster/projects/ml", "viewfs://cluster", 0, "/projects/ml",
         "viewfs://cluster/projects/ml"),
        ("hdfs://nn:8020/with%20space", "hdfs://nn", 8020, "/with space",
         "hdfs://nn:8020/with space"),
    ],
)  # fmt: skip
def test_destination_becomes_host_port_and_root(
    destination: str, host: str, port: int, root: str, uri: str
) -> None:
    settings = hadoop_settings(destination, {})
    assert settings.arguments == {
        "host": host, "port": port, "user": None, "kerb_ticket": None, "extra_conf": TIMEOUTS,
    }  # fmt: skip
    assert (settings.root, settings.uri) == (root, uri)


def test_mlflow_variables_become_hadoop_arguments() -> None:
    env = {
        "MLFLOW_KERBEROS_TICKET_CACHE": "/tmp/krb5cc_1000",
        "MLFLOW_KERBEROS_USER": "trainer@EXAMPLE.COM",
        "MLFLOW_PYARROW_EXTRA_CONF": "dfs.replication=2, dfs.client.use.datanode.hostname=true,"
        "hadoop.security.authentication=kerberos,a.b=x=y",
        "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": "12.5",
    }
    arguments = hadoop_settings("hdfs://nn:8020/a", env).arguments
    assert arguments == {
        "host": "hdfs://nn",
        "port": 8020,
        "user": "trainer@EXAMPLE.COM",
        "kerb_ticket": "/tmp/krb5cc_1000",
        "extra_conf": {
            "dfs.replication": "2",
            "dfs.client.use.datanode.hostname": "true",
            "hadoop.security.authentication": "kerberos",
            "a.b": "x=y",
            "dfs.client.socket-timeout": "12500",
            "ipc.client.connect.timeout": "12500",
        },
    }


def test_extra_conf_wins_over_the_timeout_and_the_uri_user_is_a_fallback() -> None:
    env = {"MLFLOW_PYARROW_EXTRA_CONF": "dfs.client.socket-timeout=300000"}
    arguments = hadoop_settings("hdfs://etl@nn:8020/a", env).arguments
    assert arguments["user"] == "etl"
    assert arguments["extra_conf"] == {
        "dfs.client.socket-timeout": "300000",
        "ipc.client.connect.timeout": "60000",
    }


@pytest.mark.parametrize(
    ("destination", "env", "message"),
    [
        ("hdfs://u:secret@nn/a", {}, "carries no password"),
        ("hdfs://nn:port/a", {}, "port"),
        ("hdfs://nn/a?x=1", {}, "takes no"),
        ("hdfs://nn/a", {"MLFLOW_PYARROW_EXTRA_CONF": "dfs.replication"}, "not key=value"),
        ("hdfs://nn/a", {"MLFLOW_PYARROW_EXTRA_CONF": "=2"}, "not key=value"),
        ("hdfs://nn/a", {"MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": "soon"}, "positive number"),
        ("hdfs://nn/a", {"MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT": "0"}, "positive number"),
    ],
)
def test_bad_settings_are_refused_at_start_up(
    destination: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        hadoop_settings(destination, env)
    assert "secret" not in info.value.message


def test_hadoop_filesystem_gets_the_arguments_and_serves(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The one substitution: `HadoopFileSystem` records its arguments, then pyarrow's local
    filesystem stands in for the cluster so the adapter built on it can be used."""
    calls: list[dict[str, Any]] = []

    def recording_hadoop_filesystem(**arguments: Any) -> pafs.FileSystem:
        calls.append(arguments)
        return pafs.LocalFileSystem()

    monkeypatch.setattr(pafs, "HadoopFileSystem", recording_hadoop_filesystem)
    env = {"MLFLOW_KERBEROS_USER": "trainer", "MLFLOW_PYARROW_EXTRA_CONF": "dfs.replication=1"}
    storage = HDFSStorage(f"hdfs://nn:8020{tmp_path}/root", environ=env)
    assert calls == [{
        "host": "hdfs://nn", "port": 8020, "user": "trainer", "kerb_ticket": None,
        "extra_conf": {"dfs.replication": "1", **TIMEOUTS},
    }]  # fmt: skip
    assert (storage.name, storage.uri) == ("hdfs", f"hdfs://nn:8020{tmp_path}/root")
    data = b"weights" * 1000
    with storage.start_upload(parse("model/w.bin")) as upload:
        upload.write(data)
        entry = upload.commit(hashlib.sha256(data).hexdigest(), overwrite=False)
    assert (tmp_path / "root/model/w.bin").read_bytes() == data
    assert storage.stat(parse("model/w.bin")).sha256 == entry.sha256
    storage.close()


def test_without_an_hdfs_client_the_server_refuses_to_start(tmp_path: Path) -> None:
    """What these machines really do: no libhdfs, no JVM found -> a clear start-up error."""
    env = {
        "PATH": "/usr/bin:/bin",
        "ARROW_LIBHDFS_DIR": str(tmp_path / "no-libhdfs"),
        "JAVA_HOME": str(tmp_path / "no-java"),
        "HADOOP_HOME": str(tmp_path / "no-hadoop"),
        "PYTHONPATH": ":".join(str(Path(__file__).parent.parent / d) for d in ("server", "client")),
    }
    result = subprocess.run(
        [sys.executable, "-m", "artifactd.cli.main", "serve", "--host", "127.0.0.1", "--port",
         "0", "--artifacts-destination", "hdfs://127.0.0.1:9/artifacts",
         "--backend-store-uri", f"sqlite:///{tmp_path}/store.db"],
        capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot open HDFS for hdfs://127.0.0.1:9/artifacts: Unable to load" in last
    assert "JAVA_HOME" in last and "libhdfs" in last and "CLASSPATH" in last


def test_open_storage_picks_hdfs_for_both_schemes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pafs, "HadoopFileSystem", lambda **_: pafs.LocalFileSystem())
    for scheme in ("hdfs", "viewfs", "HDFS"):
        storage = open_storage(f"{scheme}://nn{tmp_path}/{scheme}")
        assert isinstance(storage, HDFSStorage)
        storage.close()


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (FileNotFoundError(2, "gone"), NotFound),
        (PermissionError(13, "Permission denied: user=bob, access=WRITE"), PermissionDenied),
        (FileExistsError(17, "exists"), AlreadyExists),
        (NotADirectoryError(20, "not a directory"), FailedPrecondition),
        (OSError("HDFS connection to namenode:8020 refused\nstack trace..."), Unavailable),
    ],
)
def test_errors_map_to_artifactd_codes(raised: OSError, expected: type[Exception]) -> None:
    """HDFS's Java exceptions reach Python as these OSErrors (pyarrow maps them by errno)."""
    fs = _ArrowFS(pafs.LocalFileSystem(), "hdfs://nn:8020/a")
    with pytest.raises(expected) as info, fs.errors("'x/y'"):
        raise raised
    assert "stack trace" not in str(info.value)


def test_a_relative_root_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="absolute"):
        ArrowStorage(pafs.LocalFileSystem(), "relative/root", "hdfs://nn/relative/root")


def test_an_aborted_upload_leaves_other_uploads_alone(tmp_path: Path) -> None:
    """pyarrow can only delete directories recursively, so an abort keeps the folders it made
    (removing them could remove what another upload just committed there)."""
    storage = ArrowStorage(pafs.LocalFileSystem(), str(tmp_path / "root"), "hdfs:///root")
    aborted = storage.start_upload(parse("new/dir/a.bin"))
    aborted.write(b"partial")
    with storage.start_upload(parse("new/dir/b.bin")) as kept:
        kept.write(b"b")
        kept.commit(hashlib.sha256(b"b").hexdigest(), overwrite=False)
    aborted.abort()
    assert [e.path.name for e in storage.iter_tree(parse("new/dir"), recursive=False)] == ["b.bin"]
    assert not list((tmp_path / "root/new/dir").glob(".artifactd-upload-*"))
    storage.close()
