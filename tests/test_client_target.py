"""Where an artifact goes is decided by the artifact path and the server, nothing else.

`resolve` turns what a user typed into (server, path) and refuses storage URIs; storage variables
of MLflow clients set in the client's environment change nothing (the seed's doubled
`s3://bucket/key/bucket/key` paths), are warned about once, or refused in strict mode.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from artifactd.client import ArtifactClient
from artifactd.client import target as target_module
from artifactd.client.target import (
    DEFAULT_PORT,
    RESERVED_STORAGE_VARIABLES,
    STRICT_ENV_VARIABLE,
    Location,
    ReservedStorageVariableError,
    ReservedStorageVariableWarning,
    resolve,
)
from artifactd.protocol.errors import ArtifactError, InvalidArgument
from artifactd.protocol.paths import ROOT, InvalidPath, parse

from conftest import sha256_of, visible_files, write_random
from servers import ServerProcess

# -- resolve ----------------------------------------------------------------------------------

RESOLVED = [
    # plain paths
    pytest.param("models/bert", None, "models/bert", id="plain"),
    pytest.param("données/模型/😀.bin", None, "données/模型/😀.bin", id="plain-unicode"),
    pytest.param("12:00.log", None, "12:00.log", id="plain-colon-not-scheme"),
    pytest.param("a%b", None, "a%b", id="plain-percent"),
    pytest.param("", None, "", id="empty-is-root"),
    pytest.param(None, None, "", id="none-is-root"),
    # artifactd:// URIs
    pytest.param("artifactd://example.org:1234/models/bert", "example.org:1234", "models/bert",
                 id="artifactd-host-port"),
    pytest.param("artifactd://example.org/models/bert", f"example.org:{DEFAULT_PORT}",
                 "models/bert", id="artifactd-default-port"),
    pytest.param("artifactd://127.0.0.1:9/a", "127.0.0.1:9", "a", id="artifactd-ipv4"),
    pytest.param("artifactd://[::1]:50051/a/b", "[::1]:50051", "a/b", id="artifactd-ipv6"),
    pytest.param("artifactd://[::1]/a", f"[::1]:{DEFAULT_PORT}", "a", id="artifactd-ipv6-default"),
    pytest.param("artifactd://[2001:db8::7]:8080/x", "[2001:db8::7]:8080", "x",
                 id="artifactd-ipv6-long"),
    pytest.param("ARTIFACTD://Example.ORG:1/x", "example.org:1", "x", id="artifactd-case"),
    pytest.param("artifactd://h:1", "h:1", "", id="artifactd-no-path-is-root"),
    pytest.param("artifactd://h:1/", "h:1", "", id="artifactd-slash-is-root"),
    pytest.param("artifactd:///models", None, "models", id="artifactd-no-server"),
    pytest.param("artifactd://h:1/données/模型.bin", "h:1", "données/模型.bin",
                 id="artifactd-unicode-path"),
    pytest.param("artifactd://h:1/a%b/100%", "h:1", "a%b/100%", id="artifactd-percent-literal"),
    # mlflow-artifacts URIs
    pytest.param("mlflow-artifacts://h:5000/0/abc/artifacts/m.bin", "h:5000",
                 "0/abc/artifacts/m.bin", id="mlflow-artifacts-host-port"),
    pytest.param("mlflow-artifacts://h/x", f"h:{DEFAULT_PORT}", "x",
                 id="mlflow-artifacts-default-port"),
    pytest.param("mlflow-artifacts://[::1]:5000/x", "[::1]:5000", "x", id="mlflow-artifacts-ipv6"),
    pytest.param("mlflow-artifacts:/0/abc/artifacts", None, "0/abc/artifacts",
                 id="mlflow-artifacts-no-server"),
    pytest.param("mlflow-artifacts:/", None, "", id="mlflow-artifacts-root"),
    # a path in a URI is always relative to the artifact root
    pytest.param("mlflow-artifacts:///etc/passwd", None, "etc/passwd",
                 id="mlflow-artifacts-empty-netloc"),
    # a name that looks like a scheme is reachable through the URI form
    pytest.param("artifactd:///ab:c/x", None, "ab:c/x", id="artifactd-scheme-like-name"),
]  # fmt: skip


@pytest.mark.parametrize(("location", "server", "path"), RESOLVED)
def test_resolve(location: str | None, server: str | None, path: str) -> None:
    assert resolve(location) == Location(server, parse(path, allow_root=True))


@pytest.mark.parametrize(
    "location",
    [None, "", "artifactd://h:1", "artifactd://h:1/", "mlflow-artifacts:/", "artifactd:///"],
)
def test_root_refused_where_a_path_is_required(location: str | None) -> None:
    with pytest.raises(InvalidArgument):
        resolve(location, allow_root=False)


def test_a_path_is_accepted_where_the_root_is_not() -> None:
    assert resolve("artifactd://h:1/a", allow_root=False) == Location("h:1", parse("a"))
    assert resolve("a/b", allow_root=False).path == parse("a/b")
    assert resolve(None).path == ROOT


@pytest.mark.parametrize(
    "location",
    [
        "artifactd://h:1/a?x=1",
        "artifactd://h:1/a?",
        "artifactd://h:1?x=1",
        "artifactd://h:1/a#frag",
        "artifactd://h:1/a#",
        "artifactd://h:1/a?x=/../../etc#f",
        "mlflow-artifacts://h:5000/a?b",
        "mlflow-artifacts:/a#b",
    ],
)
def test_query_and_fragment_are_refused(location: str) -> None:
    with pytest.raises(InvalidArgument, match="no query or fragment"):
        resolve(location)


@pytest.mark.parametrize(
    "location",
    [
        "artifactd://user:s3cr3t@h:1/a",
        "artifactd://user@h/a",
        "artifactd://:s3cr3t@h:1/a",
        "mlflow-artifacts://user:s3cr3t@h:5000/a",
    ],
)
def test_credentials_in_the_uri_are_refused(location: str) -> None:
    with pytest.raises(InvalidArgument, match="credentials"):
        resolve(location)


def test_credentials_are_not_echoed_in_the_error() -> None:
    """An error message ends up in logs and CI output: it must not repeat a password."""
    with pytest.raises(InvalidArgument) as caught:
        resolve("artifactd://user:s3cr3t@h:1/a")
    assert "s3cr3t" not in caught.value.message


@pytest.mark.parametrize(
    "location", ["artifactd://h:99999/a", "artifactd://h:port/a", "artifactd://h:-1/a"]
)
def test_invalid_port_is_refused(location: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid port"):
        resolve(location)


@pytest.mark.parametrize(
    ("location", "scheme"),
    [
        ("s3://bucket/key", "s3"),
        ("S3://bucket/key", "s3"),
        ("s3a://bucket/key", "s3a"),
        ("gs://bucket/key", "gs"),
        ("file:///etc/passwd", "file"),
        ("file:/etc/passwd", "file"),
        ("file://localhost/etc/passwd", "file"),
        ("http://127.0.0.1:9000/bucket/key", "http"),
        ("https://example.org/bucket/key", "https"),
        ("wasbs://container@account/key", "wasbs"),
        ("abfss://container@account/key", "abfss"),
        ("hdfs://namenode:8020/key", "hdfs"),
        ("ftp://host/key", "ftp"),
        ("sftp://host/key", "sftp"),
        ("dbfs:/key", "dbfs"),
        ("models:/name/1", "models"),
    ],
)
def test_storage_uris_are_refused_naming_the_server(location: str, scheme: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        resolve(location)
    message = caught.value.message
    assert f"{scheme}://" in message
    assert "artifactd server" in message
    assert "storage" in message


@pytest.mark.parametrize(
    "location",
    [
        "C:/Windows/win.ini",
        "C:\\Windows\\win.ini",
        "c:win.ini",
        "artifactd://h:1/../etc/passwd",
        "artifactd://h:1//etc/passwd",
        "artifactd://h:1/a/%2e%2e/%2e%2e/b",
        "artifactd://h:1/a/%252e%252e/b",
        "artifactd://h:1/a\\..\\b",
        "artifactd://h:1/a/",
        "artifactd://h:1/a;x=1",
        "artifactd://h:1/C:/x",
        "artifactd://h:1/\uff0e\uff0e/x",
        "mlflow-artifacts:/../x",
        "mlflow-artifacts:////etc/passwd",
        "mlflow-artifacts://h:5000/a/.artifactd-upload-x",
        "../x",
        "/etc/passwd",
    ],
)
def test_bad_paths_inside_uris_are_refused(location: str) -> None:
    with pytest.raises(InvalidArgument):
        resolve(location)


def test_a_name_that_looks_like_a_scheme_is_read_as_a_uri() -> None:
    """`ab:c/x` is a valid artifact path, but typed bare it is a URI with the scheme `ab`."""
    with pytest.raises(InvalidArgument, match="ab://"):
        resolve("ab:c/x")


def test_bad_paths_are_invalid_path_errors() -> None:
    with pytest.raises(InvalidPath):
        resolve("artifactd://h:1/../x")
    with pytest.raises(InvalidPath):
        resolve("a//b")


# -- the client with URIs, against the real server ------------------------------------------


def test_client_accepts_uris_naming_its_own_server(
    client: ArtifactClient, server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    local = tmp_path / "m.bin"
    write_random(local, 100)
    info = client.log_artifact(local, f"mlflow-artifacts://{server.target}/{prefix}")
    assert info.path == f"{prefix}/m.bin"
    listed = client.list_artifacts(f"artifactd://{server.target}/{prefix}")
    assert [i.path for i in listed] == [f"{prefix}/m.bin"]
    got = client.get_artifact_info(f"artifactd://{server.target}/{prefix}/m.bin")
    assert got.file_size == 100
    assert visible_files(server.root / prefix) == ["m.bin"]


def test_client_refuses_uris_naming_another_server(
    client: ArtifactClient, server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    local = tmp_path / "m.bin"
    write_random(local, 10)
    with pytest.raises(InvalidArgument, match="names server"):
        client.log_artifact(local, f"artifactd://other.invalid:1/{prefix}")
    with pytest.raises(InvalidArgument, match="names server"):
        client.list_artifacts("mlflow-artifacts://other.invalid:5000/x")
    with pytest.raises(InvalidArgument, match="artifactd server"):
        client.log_artifact(local, "s3://bucket/key")
    with pytest.raises(InvalidArgument):
        client.delete_artifacts(f"artifactd://{server.target}/")
    assert not (server.root / prefix).exists()


# -- client-side storage variables ----------------------------------------------------------


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgets which variables were already warned about, so "once" is observable."""
    monkeypatch.setattr(target_module, "_warned", set())


def _storage_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, ReservedStorageVariableWarning)]


@pytest.mark.parametrize(
    "destination",
    [
        pytest.param("{prefix}", id="plain-path"),
        pytest.param("artifactd://{target}/{prefix}", id="artifactd-uri"),
        pytest.param("mlflow-artifacts://{target}/{prefix}", id="mlflow-artifacts-uri"),
    ],
)
@pytest.mark.usefixtures("fresh_warnings")
def test_s3_endpoint_variable_does_not_rewrite_the_upload_path(
    server: ServerProcess,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    destination: str,
) -> None:
    """The seed's pitfall: the endpoint's path doubled into `s3://bucket/key/bucket/key`."""
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000/bucket")
    local = tmp_path / "model.bin"
    digest = write_random(local, 70_000)
    artifact_path = destination.format(prefix=prefix, target=server.target)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # Python's own once-per-place filter must not hide repeats
        with ArtifactClient(server.target) as first:
            info = first.log_artifact(local, artifact_path)
        with ArtifactClient(server.target) as second:
            listed = second.list_artifacts(prefix, recursive=True)
            local_copy = second.download_artifacts(f"{prefix}/model.bin", tmp_path / "dl")
    assert info.path == f"{prefix}/model.bin"
    assert info.sha256 == digest
    assert [i.path for i in listed] == [f"{prefix}/model.bin"]
    stored = server.root / prefix / "model.bin"
    assert visible_files(server.root / prefix) == ["model.bin"]
    assert sha256_of(stored) == digest
    for doubled in ("bucket", "127.0.0.1:9000", "http:", "s3:"):
        assert not (server.root / doubled).exists()
    assert sha256_of(Path(local_copy)) == digest
    assert Path(local_copy) == tmp_path / "dl" / prefix / "model.bin"

    found = _storage_warnings(caught)
    assert len(found) == 1, [str(w.message) for w in found]
    assert "MLFLOW_S3_ENDPOINT_URL" in str(found[0].message)
    assert found[0].filename == __file__  # points at the line that made the client


@pytest.mark.parametrize("name", RESERVED_STORAGE_VARIABLES)
@pytest.mark.usefixtures("fresh_warnings")
def test_each_storage_variable_warns_once_over_many_clients(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "s3://bucket/key")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            ArtifactClient(server.target).close()
    found = _storage_warnings(caught)
    assert len(found) == 1
    assert name in str(found[0].message)
    others = [n for n in RESERVED_STORAGE_VARIABLES if n != name]
    assert not [n for n in others if n in str(found[0].message)]


@pytest.mark.usefixtures("fresh_warnings")
def test_a_variable_set_later_gets_its_own_warning(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000/bucket")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ArtifactClient(server.target).close()
        monkeypatch.setenv("MLFLOW_DEFAULT_ARTIFACT_ROOT", "s3://bucket/key")
        ArtifactClient(server.target).close()
        ArtifactClient(server.target).close()
    found = _storage_warnings(caught)
    assert len(found) == 2
    assert "MLFLOW_DEFAULT_ARTIFACT_ROOT" not in str(found[0].message)
    assert "MLFLOW_DEFAULT_ARTIFACT_ROOT" in str(found[1].message)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MLFLOW_S3_ENDPOINT_URL", ""),
        ("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_CA_BUNDLE", "/etc/ssl/ca.pem"),
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000"),
    ],
)
@pytest.mark.usefixtures("fresh_warnings")
def test_other_or_empty_variables_do_not_warn(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ArtifactClient(server.target, strict_env=True).close()
        ArtifactClient(server.target).close()
    assert _storage_warnings(caught) == []


@pytest.mark.parametrize("name", RESERVED_STORAGE_VARIABLES)
@pytest.mark.usefixtures("fresh_warnings")
def test_strict_mode_argument_refuses_a_storage_variable(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "http://127.0.0.1:9000/bucket")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ReservedStorageVariableError) as raised:
            ArtifactClient(server.target, strict_env=True)
    assert name in raised.value.message
    assert isinstance(raised.value, InvalidArgument)
    assert isinstance(raised.value, ArtifactError)
    assert _storage_warnings(caught) == []


@pytest.mark.parametrize("flag", ["1", "true", "TRUE", "yes", "on", " 1 "])
@pytest.mark.usefixtures("fresh_warnings")
def test_strict_mode_from_the_environment_refuses_a_storage_variable(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000/bucket")
    monkeypatch.setenv(STRICT_ENV_VARIABLE, flag)
    with pytest.raises(ReservedStorageVariableError, match="MLFLOW_S3_ENDPOINT_URL"):
        ArtifactClient(server.target)


def test_strict_mode_names_every_variable_set(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000/bucket")
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=a;AccountKey=k")
    with pytest.raises(ReservedStorageVariableError) as raised:
        ArtifactClient(server.target, strict_env=True)
    assert "MLFLOW_S3_ENDPOINT_URL" in raised.value.message
    assert "AZURE_STORAGE_CONNECTION_STRING" in raised.value.message
    assert "AccountKey=k" not in raised.value.message


@pytest.mark.parametrize("flag", ["0", "false", "no", "off", ""])
@pytest.mark.usefixtures("fresh_warnings")
def test_non_strict_environment_values_only_warn(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch, flag: str
) -> None:
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9000/bucket")
    monkeypatch.setenv(STRICT_ENV_VARIABLE, flag)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ArtifactClient(server.target).close()
    assert len(_storage_warnings(caught)) == 1


def test_strict_mode_without_storage_variables_works(
    server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(STRICT_ENV_VARIABLE, "1")
    with ArtifactClient(server.target) as client:
        assert client.get_capabilities().backend == "local"
    with ArtifactClient(server.target, strict_env=True) as client:
        assert client.get_artifact_info("").is_dir
