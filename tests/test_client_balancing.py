"""What `--server` / `ARTIFACTD_SERVER` accept: one server, a list of replicas, a gRPC target URI;
anything else is one clear line (the balancing itself is tested on real replicas in
test_replicas.py)."""

from __future__ import annotations

import json

import pytest

from artifactd.client.rpc import TRANSPARENT_RETRIES, service_config
from artifactd.client.target import resolve, server_target
from artifactd.protocol.errors import InvalidArgument

from servers import run_cli


@pytest.mark.parametrize(
    ("text", "channel", "balanced"),
    [
        ("127.0.0.1:50051", "127.0.0.1:50051", False),
        ("artifacts.internal:443", "artifacts.internal:443", False),
        ("[::1]:9", "[::1]:9", False),
        ("10.0.0.1:1, 10.0.0.2:2,10.0.0.3:3", "ipv4:10.0.0.1:1,10.0.0.2:2,10.0.0.3:3", True),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2", True),
        ("dns:///artifactd.ns.svc:50051", "dns:///artifactd.ns.svc:50051", True),
        ("ipv4:127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2", True),
        ("unix:/run/artifactd.sock", "unix:/run/artifactd.sock", False),
    ],
)
def test_targets_accepted(text: str, channel: str, balanced: bool) -> None:
    target = server_target(text)
    assert (target.channel, target.balanced) == (channel, balanced)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "is empty"),
        ("localhost", "is not HOST:PORT"),
        ("h:0", "port from 1 to 65535"),
        ("h:70000", "port from 1 to 65535"),
        ("a:1,b:2", "for names, give one DNS name"),
        ("127.0.0.1:1,[::1]:2", "mixes IPv4 and IPv6"),
        ("http://h:1", "not a gRPC target"),
        ("ipv4:h:1", "not an IPv4 address"),
        ("dns:///name", "is not HOST:PORT"),
        ("unix:", "names no socket"),
    ],
)
def test_bad_targets_are_one_line(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says) as caught:
        server_target(text)
    assert "\n" not in str(caught.value)


def test_uri_with_replicas() -> None:
    location = resolve("artifactd://10.0.0.1:1,10.0.0.2:2/models/m.bin")
    assert location.target == "10.0.0.1:1,10.0.0.2:2" and str(location.path) == "models/m.bin"


def test_service_config_retries_only_read_only_calls() -> None:
    config = json.loads(service_config(balanced=True))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    assert config["healthCheckConfig"]["serviceName"] == "artifactd.v1.ArtifactService"
    names = {(n["service"], n["method"]) for n in config["methodConfig"][0]["name"]}
    assert ("artifactd.v1.ArtifactService", "LogArtifact") not in names
    assert ("artifactd.v1.ArtifactService", "CreateMultipartUpload") not in names
    assert len(names) == sum(len(m) for m in TRANSPARENT_RETRIES.values())
    assert "healthCheckConfig" not in json.loads(service_config(balanced=False))


def test_cli_invalid_target_is_one_line() -> None:
    result = run_cli("artifacts", "list", env={"ARTIFACTD_SERVER": "a:1,b:2"})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "dns:///NAME:1" in result.stderr, result.stderr
