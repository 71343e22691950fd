"""The generated TypeScript and Go clients against a real server: their roundtrip examples.

Each example (client/typescript/examples/roundtrip.ts, client/go/cmd/roundtrip) uploads a random
3 MiB file with LogArtifact, finds it with ListArtifacts and downloads it with DownloadArtifact;
the test checks that the downloaded bytes, what the example reports, and what the Python client
sees afterwards all have the source's sha256. scripts/build_clients.sh builds both examples
offline first (tsc, go vet, go build); node and go come from scripts/install_clients.sh, and a
missing toolchain fails these tests rather than skipping them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from artifactd.client import ArtifactClient

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


@pytest.fixture(scope="module")
def polyglot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("polyglot")
    process = start_server(base / "store", base / "run")
    yield process
    code = process.stop()
    assert code == 0, f"server exited with {code}:\n{process.log_text()}"


@pytest.mark.parametrize("language", ["typescript", "go"])
def test_example_round_trips_a_file(
    language: str, built: None, polyglot_server: ServerProcess, tmp_path: Path
) -> None:
    source = tmp_path / "source.bin"
    source_sha256 = write_random(source, SIZE)
    downloaded = tmp_path / "downloaded.bin"
    artifact = f"polyglot-{language}-{uuid.uuid4().hex[:10]}/data.bin"

    command = [*example_command(language), polyglot_server.target, str(source), str(downloaded)]
    result = subprocess.run(
        [*command, artifact], capture_output=True, text=True, timeout=120, check=False
    )
    output = f"{' '.join(command)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
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
    assert downloaded.stat().st_size == SIZE
    assert sha256_of(downloaded) == source_sha256
    assert sha256_of(polyglot_server.root / artifact) == source_sha256

    # What another language wrote, the Python client reads.
    with ArtifactClient(polyglot_server.target) as client:
        info = client.get_artifact_info(artifact)
        assert (info.is_dir, info.file_size, info.sha256) == (False, SIZE, source_sha256)
        listed = client.list_artifacts(artifact.rsplit("/", 1)[0])
        assert [(e.path, e.sha256) for e in listed] == [(artifact, source_sha256)]
        local = Path(client.download_artifacts(artifact, tmp_path / "python"))
    assert sha256_of(local) == source_sha256
