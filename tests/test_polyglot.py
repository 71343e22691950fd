"""The generated TypeScript and Go clients against a real server: their roundtrip examples.

Each example (client/typescript/examples/roundtrip.ts, client/go/cmd/roundtrip) uploads a random
file with LogArtifact, finds it with ListArtifacts and downloads it with DownloadArtifact; the
tests check that the downloaded bytes, what the example reports, and what the Python client sees
afterwards all have the source's sha256. The examples connect with their languages' connection
helpers (client/typescript/src/connection.ts, client/go/artifactd), which take the Python
client's options and environment variables: a server with TLS, mutual TLS and token
authentication lets them in with the right CA, client certificate and token, given as options
or as variables, and refuses them, with the gRPC status a user can act on, with a wrong CA, no or
a stranger's client certificate, and a wrong or no token. scripts/build_clients.sh builds both
examples offline first (tsc, go vet, go build); node and go come from
scripts/install_clients.sh, and a missing toolchain fails these tests rather than skipping them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactd.client import ArtifactClient
from artifactd.client.settings import ClientSettings
from artifactd.protocol.grants import new_token, token_digest
from test_tls import Pki, pki  # noqa: F401 - the fixture: a throwaway CA and certificates

from conftest import sha256_of, write_random
from servers import ServerProcess, start_server

TOP = Path(__file__).resolve().parent.parent
SIZE = 3 << 20
INSTALL = "run scripts/install_clients.sh (as root: Debian's Go packages, then npm ci)"


def example_command(language: str) -> list[str]:
    if language == "typescript":
        return ["node", str(TOP / "client/typescript/dist/examples/roundtrip.js")]
    return [str(TOP / "client/go/bin/roundtrip")]


@pytest.fixture(scope="module")
def built() -> None:
    """Builds both examples; fails, naming what is missing, when a toolchain is not installed."""
    missing = [tool for tool in ("node", "go") if shutil.which(tool) is None]
    if not (TOP / "client/typescript/node_modules/.bin/tsc").exists():
        missing.append("client/typescript/node_modules")
    if missing:
        pytest.fail(f"the polyglot client tests need {', '.join(missing)}: {INSTALL}")
    result = subprocess.run(
        [str(TOP / "scripts/build_clients.sh")],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(
            f"scripts/build_clients.sh failed ({result.returncode}):\n{result.stdout}\n"
            f"{result.stderr}\nIf a toolchain or package is missing: {INSTALL}"
        )


LANGUAGES = ["typescript", "go"]
SMALL = 64 << 10
"""The size of the file in the TLS and token tests: the handshake and the token are the point."""

FLAGS = {
    "server": "--server", "tls_ca": "--tls-ca", "client_cert": "--client-cert",
    "client_key": "--client-key", "token_file": "--token-file",
}  # fmt: skip
VARIABLES = {
    "server": "ARTIFACTD_SERVER", "tls_ca": "ARTIFACTD_TLS_CA",
    "client_cert": "ARTIFACTD_CLIENT_CERT", "client_key": "ARTIFACTD_CLIENT_KEY",
    "token": "ARTIFACTD_TOKEN", "token_file": "ARTIFACTD_TOKEN_FILE",
}  # fmt: skip


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any ARTIFACTD_ variable, plus `variables`: what the
    example sees is what the test gives it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTIFACTD_")}
    return {**env, **variables}


def connection_args(
    settings: dict[str, str], via: str, tmp_path: Path
) -> tuple[list[str], dict[str, str]]:
    """The example's command-line options (`via="options"`) or environment (`via="env"`) for
    `settings` (keys of VARIABLES). A token as a value is an environment variable only (no
    secret on a command line): as an option it goes through a token file."""
    if via == "env":
        return [], clean_environment(**{VARIABLES[k]: v for k, v in settings.items()})
    args: list[str] = []
    for key, value in settings.items():
        if key != "token":
            args += [FLAGS[key], value]
            continue
        token_file = tmp_path / f"token-{uuid.uuid4().hex[:6]}"
        token_file.write_text(value + "\n")
        args += [FLAGS["token_file"], str(token_file)]
    return args, clean_environment()


@pytest.fixture(scope="module")
def polyglot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("polyglot")
    process = start_server(base / "store", base / "run")
    yield process
    code = process.stop()
    assert code == 0, f"server exited with {code}:\n{process.log_text()}"


def run_example(
    language: str,
    args: list[str],
    env: dict[str, str],
    source: Path,
    downloaded: Path,
    artifact: str,
) -> tuple[subprocess.CompletedProcess[str], str]:
    """Runs the example; returns its result and a description of the run for messages."""
    command = [*example_command(language), *args, str(source), str(downloaded), artifact]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, check=False, env=env
    )
    shown = {k: v for k, v in env.items() if k.startswith("ARTIFACTD_")}
    output = (
        f"{' '.join(command)} with {shown}: exit {result.returncode}\n{result.stdout}\n"
        f"{result.stderr}"
    )
    return result, output


def assert_round_trip(
    result: subprocess.CompletedProcess[str],
    output: str,
    root: Path,
    artifact: str,
    source_sha256: str,
    downloaded: Path,
) -> None:
    assert result.returncode == 0, output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "path": artifact,
        "source_sha256": source_sha256,
        "stored_sha256": source_sha256,
        "listed_sha256": source_sha256,
        "downloaded_sha256": source_sha256,
    }, output
    # The bytes themselves, not only what the example says about them.
    assert sha256_of(downloaded) == source_sha256
    assert sha256_of(root / artifact) == source_sha256


@pytest.mark.parametrize("language", LANGUAGES)
def test_example_round_trips_a_file(
    language: str, built: None, polyglot_server: ServerProcess, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    source_sha256 = write_random(source, SIZE)
    downloaded = tmp_path / "downloaded.bin"
    artifact = f"polyglot-{language}-{uuid.uuid4().hex[:10]}/data.bin"

    result, output = run_example(
        language, ["--server", polyglot_server.target], clean_environment(), source,
        downloaded, artifact,
    )  # fmt: skip
    assert_round_trip(result, output, polyglot_server.root, artifact, source_sha256, downloaded)
    assert downloaded.stat().st_size == SIZE

    # What another language wrote, the Python client reads.
    with ArtifactClient(polyglot_server.target) as client:
        info = client.get_artifact_info(artifact)
        assert (info.is_dir, info.file_size, info.sha256) == (False, SIZE, source_sha256)
        listed = client.list_artifacts(artifact.rsplit("/", 1)[0])
        assert [(e.path, e.sha256) for e in listed] == [(artifact, source_sha256)]
        local = Path(client.download_artifacts(artifact, tmp_path / "python"))
    assert sha256_of(local) == source_sha256


@pytest.fixture(scope="module")
def tokens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tokens file granting one token global write (and so read) access, and that token."""
    token = new_token()
    path = tmp_path_factory.mktemp("polyglot-tokens") / "tokens.toml"
    path.write_text(
        f'[[token]]\nprincipal = "polyglot"\nsha256 = "{token_digest(token)}"\nroles = ["writer"]\n'
    )
    return path, token


@pytest.fixture(scope="module")
def secure_server(
    pki: Pki,  # noqa: F811 - the fixture imported from test_tls
    tokens: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    """TLS, a client certificate from the test CA required (mutual TLS), and token auth."""
    base = tmp_path_factory.mktemp("polyglot-secure")
    server = start_server(
        base / "store", base / "run", "--tls-cert", str(pki.server_cert), "--tls-key",
        str(pki.server_key), "--tls-client-ca", str(pki.ca), "--auth-tokens-file", str(tokens[0]),
        client=ClientSettings(tls_ca=str(pki.ca), client_cert=str(pki.client_cert),
                              client_key=str(pki.client_key), token=tokens[1]),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log_text()


@pytest.fixture(scope="module")
def token_server(
    tokens: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """Plaintext with token auth: a server behind a mesh sidecar that terminates mutual TLS."""
    base = tmp_path_factory.mktemp("polyglot-token")
    server = start_server(
        base / "store", base / "run", "--auth-tokens-file", str(tokens[0]),
        client=ClientSettings(token=tokens[1]),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log_text()


@pytest.fixture
def mtls_settings(
    secure_server: ServerProcess,
    pki: Pki,  # noqa: F811
    tokens: tuple[Path, str],
) -> dict[str, str]:
    """What secure_server lets in: its CA, the client certificate of that CA, the token."""
    return {
        "server": secure_server.target, "tls_ca": str(pki.ca),
        "client_cert": str(pki.client_cert), "client_key": str(pki.client_key),
        "token": tokens[1],
    }  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("via", ["options", "env", "env-token-file"])
def test_example_connects_with_mutual_tls_and_a_token(
    language: str,
    via: str,
    built: None,
    secure_server: ServerProcess,
    mtls_settings: dict[str, str],
    tmp_path: Path,
) -> None:
    settings = dict(mtls_settings)
    if via == "env-token-file":
        token_file = tmp_path / "token"
        token_file.write_text(f"  {settings.pop('token')}  \nsecond line is ignored\n")
        settings["token_file"] = str(token_file)
    args, env = connection_args(settings, "options" if via == "options" else "env", tmp_path)
    source = tmp_path / "source.bin"
    source_sha256 = write_random(source, SMALL)
    downloaded = tmp_path / "downloaded.bin"
    artifact = f"secure-{language}-{uuid.uuid4().hex[:10]}/data.bin"
    result, output = run_example(language, args, env, source, downloaded, artifact)
    assert_round_trip(result, output, secure_server.root, artifact, source_sha256, downloaded)


REFUSALS = {
    # case: (what changes in the good settings, status, what the message must say)
    "wrong CA": (
        {"tls_ca": "other_ca"}, "UNAVAILABLE", r"certificate|unknown authority|verify"
    ),
    "no client certificate": (
        {"client_cert": None, "client_key": None}, "UNAVAILABLE", r"(?i)certificate|handshake|tls",
    ),
    "a stranger's client certificate": (
        {"client_cert": "stranger_cert", "client_key": "stranger_key"}, "UNAVAILABLE",
        r"(?i)certificate|handshake|tls",
    ),
    "wrong token": ({"token": "adt_not-the-token"}, "UNAUTHENTICATED", r"bearer token is not valid"),
    "no token": ({"token": None}, "UNAUTHENTICATED", r"send a bearer token"),
    "certificate without its key": (
        {"client_key": None}, "INVALID_ARGUMENT", r"client certificate needs its key",
    ),
}  # fmt: skip


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("via", ["options", "env"])
@pytest.mark.parametrize("case", list(REFUSALS))
def test_example_is_refused_with_a_clear_status(
    language: str,
    via: str,
    case: str,
    built: None,
    secure_server: ServerProcess,
    mtls_settings: dict[str, str],
    pki: Pki,  # noqa: F811
    tmp_path: Path,
) -> None:
    changes, status, message = REFUSALS[case]
    settings = dict(mtls_settings)
    for key, value in changes.items():
        if value is None:
            del settings[key]
        elif key == "token":
            settings[key] = value
        else:
            settings[key] = str(getattr(pki, value))
    args, env = connection_args(settings, via, tmp_path)
    source = tmp_path / "source.bin"
    write_random(source, SMALL)
    artifact = f"refused-{language}-{uuid.uuid4().hex[:10]}/data.bin"
    result, output = run_example(language, args, env, source, tmp_path / "downloaded.bin", artifact)
    assert result.returncode == 1, output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"roundtrip: status {status}: "), output
    assert re.search(message, last), output
    assert not (secure_server.root / artifact).exists()


@pytest.mark.parametrize("language", LANGUAGES)
def test_token_goes_over_plaintext_as_with_the_python_client(
    language: str,
    built: None,
    token_server: ServerProcess,
    tokens: tuple[Path, str],
    tmp_path: Path,
) -> None:
    """The Python client sends its token without TLS too (a mesh sidecar's plaintext hop); so do
    the helpers. Without the token the same call is refused."""
    source = tmp_path / "source.bin"
    source_sha256 = write_random(source, SMALL)
    downloaded = tmp_path / "downloaded.bin"
    artifact = f"plain-token-{language}-{uuid.uuid4().hex[:10]}/data.bin"
    env = clean_environment(ARTIFACTD_SERVER=token_server.target, ARTIFACTD_TOKEN=tokens[1])
    result, output = run_example(language, [], env, source, downloaded, artifact)
    assert_round_trip(result, output, token_server.root, artifact, source_sha256, downloaded)

    env = clean_environment(ARTIFACTD_SERVER=token_server.target)
    result, output = run_example(language, [], env, source, downloaded, artifact + ".again")
    assert result.returncode == 1, output
    assert "status UNAUTHENTICATED: " in result.stderr, output
