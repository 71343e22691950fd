"""The deployment files: lint (hadolint, kubernetes-validate), the image's command run for real,
and the manifests checked against what the server really serves and accepts.

No Docker engine runs here, so the Dockerfile's runtime stage is read instead: its ENV, ENTRYPOINT
and CMD start a real `artifactd serve` process (paths under /data moved to a temporary folder,
every host 127.0.0.1 and every port 0), its HEALTHCHECK command runs against that process, and
SIGTERM must end it with exit code 0.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from artifactd_server.cli import serve_command

from servers import HOST

TOP = Path(__file__).resolve().parent.parent
DOCKERFILE = TOP / "Dockerfile"
KUBERNETES = TOP / "deploy" / "kubernetes"
LINT = TOP / "scripts" / "lint_deploy.sh"
VENV_BIN = Path(sys.executable).parent  # stands in for the image's /opt/artifactd/bin
GRPC_PORT = 50051
METRICS_PORT = 9464


# ---------------------------------------------------------------------------------------------
# Reading the Dockerfile and the manifests


@dataclass
class Stage:
    """One build stage: its instructions, continuation lines joined, comments dropped."""

    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"the runtime stage has no {keyword}"
        return found[-1]


def dockerfile_stages(text: str) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stages.append(Stage(args.strip()))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
    return stages


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not JSON exec form: {args}"
    return [str(item) for item in value]


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)


def parse_env(stage: Stage, base: dict[str, str] | None = None) -> dict[str, str]:
    """ENV KEY=VALUE pairs of the stage, in order, ${VAR} expanded as the builder does (against
    `base`, the base image's environment, and the stage's earlier ENV)."""
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for pair in shlex.split(args):
            key, sep, value = pair.partition("=")
            assert sep, f"ENV without '=': {pair} (use ENV KEY=VALUE)"
            env[key] = expand(value, {**(base or {}), **env})
    return env


def parse_healthcheck(args: str) -> tuple[dict[str, str], list[str]]:
    options: dict[str, str] = {}
    words = args.split()
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        options[key] = value
    rest = " ".join(words)
    assert rest.startswith("CMD "), f"HEALTHCHECK needs CMD: {args}"
    return options, exec_form(rest[4:])


def runtime_stage() -> Stage:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2, "the Dockerfile is not multi-stage"
    return stages[-1]


def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes resource of deploy/kubernetes, by kind."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                assert doc["kind"] not in found, f"two {doc['kind']} resources"
                found[doc["kind"]] = doc
    return found


def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    containers = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def serve_envvars() -> set[str]:
    """Every environment variable `artifactd serve` reads, from its click options right now."""
    names: set[str] = set()
    for param in serve_command.params:
        envvar = getattr(param, "envvar", None)
        if isinstance(envvar, str):
            names.add(envvar)
        elif envvar:
            names.update(envvar)
    return names


# ---------------------------------------------------------------------------------------------
# Lint


def run_lint(root: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VENV": str(VENV_BIN.parent)}
    if root is not None:
        env["DEPLOY_ROOT"] = str(root)
    return subprocess.run(
        ["bash", str(LINT)], capture_output=True, text=True, env=env, timeout=180, check=False
    )


def test_lint_script_passes() -> None:
    result = run_lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploy lint: ok" in result.stdout


BREAKAGES = {
    # hadolint DL3003 (cd in RUN) and DL3002 (last USER root)
    "dockerfile": ("Dockerfile", "USER 10001:10001", "USER root\nRUN cd /tmp && true"),
    # a field the Deployment schema does not have (strict validation)
    "unknown field": ("deploy/kubernetes/deployment.yaml", "  replicas: 2", "  replica: 2"),
    # a kind kubernetes-validate has no schema for: a warning, counted as a failure
    "unknown kind": ("deploy/kubernetes/pdb.yaml", "kind: PodDisruptionBudget", "kind: PodBudget"),
    # a manifest the kustomization does not list
    "unlisted": ("deploy/kubernetes/extra.yaml", None, "apiVersion: v1\nkind: Namespace\n"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_lint_script_fails_on_a_broken_copy(tmp_path: Path, breakage: str) -> None:
    shutil.copy(DOCKERFILE, tmp_path / "Dockerfile")
    shutil.copytree(TOP / "deploy", tmp_path / "deploy")
    assert run_lint(tmp_path).returncode == 0, "the unbroken copy must pass"
    relative, old, new = BREAKAGES[breakage]
    target = tmp_path / relative
    if old is None:
        target.write_text(new)
    else:
        text = target.read_text()
        assert old in text, f"{relative} no longer contains {old!r}: update this test"
        target.write_text(text.replace(old, new, 1))
    result = run_lint(tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------
# The Dockerfile


def test_dockerfile_shape() -> None:
    stages = dockerfile_stages(DOCKERFILE.read_text())
    assert len(stages) >= 2 and " AS " in stages[0].base.upper(), "multi-stage, named builder"
    runtime = stages[-1]
    assert "slim" in DOCKERFILE.read_text().split("ARG PYTHON_IMAGE=", 1)[1].split()[0]
    user = runtime.last("USER").split(":")
    assert all(part.isdigit() and int(part) != 0 for part in user), f"USER {user} not numeric"
    exposed = {int(port.split("/")[0]) for args in runtime.all("EXPOSE") for port in args.split()}
    assert exposed == {GRPC_PORT, METRICS_PORT}
    assert runtime.last("STOPSIGNAL") == "SIGTERM"
    env = parse_env(runtime)
    assert env["ARTIFACTD_HOST"] == "0.0.0.0"
    assert int(env["ARTIFACTD_PORT"]) == GRPC_PORT
    assert int(env["ARTIFACTD_METRICS_PORT"]) == METRICS_PORT
    assert env["ARTIFACTD_ARTIFACTS_DESTINATION"].startswith("/data/")
    # every dependency from the hashed lock, wheels only
    build = " ".join(args for stage in stages[:-1] for args in stage.all("RUN"))
    assert build.count("--require-hashes") >= 2 and "requirements.lock" in build
    assert "--only-binary=:all:" in build


def test_every_image_setting_is_a_serve_option() -> None:
    env = parse_env(runtime_stage())
    names = {name for name in env if name.startswith("ARTIFACTD_")}
    missing = sorted(names - serve_envvars())
    assert not missing, f"Dockerfile ENV names no `artifactd serve` option: {missing}"


def test_locks_cover_pyproject() -> None:
    """deploy/requirements.lock pins, with hashes, a version inside every range of the two
    distributions the image installs (client/, and server/ with the extras deploy/lock.sh names,
    which the Dockerfile documents); if not: run deploy/lock.sh. The build lock does the same for
    their [build-system] requires."""
    client = tomllib.loads((TOP / "client" / "pyproject.toml").read_text())
    server = tomllib.loads((TOP / "server" / "pyproject.toml").read_text())
    match = re.search(
        r"IMAGE_EXTRAS=\$\{IMAGE_EXTRAS:-([a-z0-9,-]+)\}", (TOP / "deploy" / "lock.sh").read_text()
    )
    assert match, "deploy/lock.sh names no IMAGE_EXTRAS"
    extras = match[1].split(",")
    assert all(extra in DOCKERFILE.read_text() for extra in extras), "the Dockerfile names them"
    runtime = [
        *client["project"]["dependencies"],
        *(r for r in server["project"]["dependencies"] if Requirement(r).name != "artifactd"),
        *(r for extra in extras for r in server["project"]["optional-dependencies"][extra]),
    ]
    checks = [
        ("requirements.lock", runtime),
        (
            "build-requirements.lock",
            client["build-system"]["requires"] + server["build-system"]["requires"],
        ),
    ]
    for lock_name, requirements in checks:
        text = (TOP / "deploy" / lock_name).read_text()
        pins: dict[str, str] = {}
        for block in re.split(r"\n(?=\S)", text):
            match = re.match(r"([A-Za-z0-9_.\-]+)==(\S+)", block)
            if match:
                assert "--hash=sha256:" in block, f"{lock_name}: {match[1]} has no hash"
                pins[canonicalize_name(match[1])] = match[2]
        for line in requirements:
            requirement = Requirement(line)
            wanted = [requirement.name, *(f"{requirement.name}-{e}" for e in requirement.extras)]
            for name in map(canonicalize_name, wanted):
                assert name in pins, f"{lock_name} lacks {name}: run deploy/lock.sh"
            version = pins[canonicalize_name(requirement.name)]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock_name} pins {requirement.name}=={version}, outside {requirement.specifier}:"
                " run deploy/lock.sh"
            )


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log: Path


def image_environment(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The runtime stage's ENV with /data moved under tmp_path, hosts 127.0.0.1, ports 0."""
    data = tmp_path / "data"
    data.mkdir()
    env = dict(os.environ)  # this machine's PATH stands in for the base image's
    for key, value in parse_env(runtime_stage(), base=env).items():
        moved = value.replace("/opt/artifactd/bin", str(VENV_BIN))
        # a path, or the path of a sqlite:////data/... URI
        env[key] = re.sub(r"^(sqlite:///)?/data(?=/|$)", lambda m: (m[1] or "") + str(data), moved)
    for key in list(env):
        if key.startswith("ARTIFACTD_") and key.endswith("_HOST"):
            env[key] = HOST
        if key.startswith("ARTIFACTD_") and key.endswith("_PORT"):
            env[key] = "0"
    env["ARTIFACTD_METRICS_HOST"] = HOST  # in case the metrics listener takes its own host
    env["ARTIFACTD_PORT_FILE"] = str(tmp_path / "port")
    return env, data


@pytest.fixture
def image_server(tmp_path: Path) -> Iterator[Running]:
    stage = runtime_stage()
    command = exec_form(stage.last("ENTRYPOINT")) + exec_form(stage.last("CMD"))
    env, data = image_environment(tmp_path)
    workdir = Path(expand(stage.last("WORKDIR"), env).replace("/data", str(data), 1))
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable is not None and Path(executable).parent == VENV_BIN, executable
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=workdir, start_new_session=True,
        )  # fmt: skip
    try:
        port_file = Path(env["ARTIFACTD_PORT_FILE"])
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield Running(process, int(port_file.read_text()), env, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def run_healthcheck(running: Running) -> subprocess.CompletedProcess[str]:
    options, command = parse_healthcheck(runtime_stage().last("HEALTHCHECK"))
    timeout = float(options.get("timeout", "30s").rstrip("s"))
    # the port the container's ARTIFACTD_PORT would name; the server bound port 0 here
    env = {**running.env, "ARTIFACTD_PORT": str(running.port)}
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=timeout + 10, check=False
    )


def test_image_command_serves_passes_its_healthcheck_and_stops_on_sigterm(
    image_server: Running,
) -> None:
    data = Path(image_server.env["ARTIFACTD_ARTIFACTS_DESTINATION"]).parent
    deadline = time.monotonic() + 20
    while (result := run_healthcheck(image_server)).returncode != 0:
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.2)
    assert result.stdout.strip() == "SERVING"
    # the SQLite store went where ARTIFACTD_BACKEND_STORE_URI says: on the volume
    assert (data / "artifactd.db").exists(), sorted(p.name for p in data.iterdir())
    # the image's STOPSIGNAL; the server drains (nothing in flight) and exits 0
    image_server.process.send_signal(signal.Signals[runtime_stage().last("STOPSIGNAL")])
    grace = float(image_server.env["ARTIFACTD_GRACE_PERIOD"])
    assert image_server.process.wait(grace + 15) == 0, image_server.log.read_text()
    # and the same healthcheck now reports the container unhealthy
    assert run_healthcheck(image_server).returncode != 0


# ---------------------------------------------------------------------------------------------
# The Kubernetes manifests against the server


def probe_services(resources: dict[str, dict[str, Any]]) -> dict[str, tuple[int, str]]:
    spec = container(resources)
    probes = {}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert kind in spec, f"no {kind}"
        grpc_probe = spec[kind].get("grpc")
        assert grpc_probe, f"{kind} is not a native gRPC probe"
        probes[kind] = (int(grpc_probe["port"]), str(grpc_probe.get("service", "")))
    return probes


def test_probes_name_services_the_server_reports_serving(image_server: Running) -> None:
    resources = manifests()
    spec = container(resources)
    ports = {port["name"]: port["containerPort"] for port in spec["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    config = resources["ConfigMap"]["data"]
    assert int(config["ARTIFACTD_PORT"]) == GRPC_PORT
    assert int(config["ARTIFACTD_METRICS_PORT"]) == METRICS_PORT
    probes = probe_services(resources)
    with grpc.insecure_channel(f"{HOST}:{image_server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for kind, (port, service) in probes.items():
            assert port == GRPC_PORT, f"{kind} probes port {port}"
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, (kind, service)
        # the check is real: a name the server does not know is refused
        with pytest.raises(grpc.RpcError) as refused:
            stub.Check(health_pb2.HealthCheckRequest(service="artifactd.v1.Nope"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert probes["readinessProbe"][1] == "artifactd.v1.ArtifactService"


def test_service_ports_and_protocols() -> None:
    resources = manifests()
    spec = container(resources)
    named = {port["name"]: port["containerPort"] for port in spec["ports"]}
    service = resources["Service"]["spec"]
    selector = resources["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= selector.items()
    by_name = {port["name"]: port for port in service["ports"]}
    assert by_name["grpc"]["appProtocol"] == "grpc"
    assert named[by_name["grpc"]["targetPort"]] == GRPC_PORT
    assert named[by_name["http-metrics"]["targetPort"]] == METRICS_PORT
    annotations = resources["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == METRICS_PORT
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"].items() <= selector.items()
    assert resources["Deployment"]["spec"]["replicas"] > pdb.get("maxUnavailable", 0)


def deployment_env_names(resources: dict[str, dict[str, Any]]) -> set[str]:
    names = set(resources["ConfigMap"]["data"])
    names.update(item["name"] for item in container(resources).get("env", []))
    return names


def test_manifest_settings_are_serve_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable the pods get names an option of `artifactd serve`, as the code stands now,
    and `serve` parses the ConfigMap's values (click ignores unknown variables silently, so a
    misspelt name would otherwise just be lost)."""
    resources = manifests()
    missing = sorted(deployment_env_names(resources) - serve_envvars())
    assert not missing, f"deploy/kubernetes sets variables `artifactd serve` lacks: {missing}"
    for name in list(os.environ):
        if name.startswith("ARTIFACTD_"):
            monkeypatch.delenv(name)
    for name, value in resources["ConfigMap"]["data"].items():
        monkeypatch.setenv(name, str(value))
    try:
        context = serve_command.make_context("serve", [])
    except click.ClickException as exc:
        pytest.fail(f"`artifactd serve` refuses the ConfigMap: {exc.format_message()}")
    assert context.params["host"] == "0.0.0.0"
    assert context.params["port"] == GRPC_PORT


def test_termination_grace_covers_prestop_and_drain() -> None:
    resources = manifests()
    pod = resources["Deployment"]["spec"]["template"]
    grace = float(resources["ConfigMap"]["data"]["ARTIFACTD_GRACE_PERIOD"])
    pre_stop = container(resources).get("lifecycle", {}).get("preStop", {})
    sleep = float(pre_stop.get("sleep", {}).get("seconds", 0))
    termination = pod["spec"]["terminationGracePeriodSeconds"]
    assert termination > sleep + grace, (termination, sleep, grace)
    # a classic Istio sidecar must outlive the drain too (deploy/istio/README.md)
    proxy = json.loads(pod["metadata"]["annotations"]["proxy.istio.io/config"])
    assert float(proxy["terminationDrainDuration"].rstrip("s")) >= sleep + grace


def test_pod_security() -> None:
    resources = manifests()
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    spec = container(resources)
    assert pod["securityContext"]["runAsNonRoot"] is True
    user = runtime_stage().last("USER").split(":")[0]
    assert pod["securityContext"]["runAsUser"] == int(user)
    security = spec["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    # read-only root: everything the server writes is a mounted volume
    mounts = {mount["mountPath"] for mount in spec["volumeMounts"]}
    data = resources["ConfigMap"]["data"]
    assert "/tmp" in mounts
    for path in (data["ARTIFACTD_ARTIFACTS_DESTINATION"], data["ARTIFACTD_AUTH_TOKENS_FILE"]):
        assert any(path.startswith(mount.rstrip("/") + "/") for mount in mounts), path
    assert spec["resources"]["requests"] and spec["resources"]["limits"]["memory"]


def test_autoscaler_scales_the_deployment_and_keeps_a_pod_through_drains() -> None:
    """The HPA targets the Deployment, on the CPU the pods request, never below the PDB's
    margin; scaling down is slower than one pod's drain; pods name themselves as replicas."""
    resources = manifests()
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    deployment = resources["Deployment"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert hpa["minReplicas"] > pdb.get("maxUnavailable", 0)
    assert hpa["maxReplicas"] >= hpa["minReplicas"] <= deployment["spec"]["replicas"]
    cpu = [m for m in hpa["metrics"] if m["type"] == "Resource"]
    assert cpu and cpu[0]["resource"]["name"] == "cpu"
    assert "cpu" in container(resources)["resources"]["requests"], "utilisation needs a request"
    termination = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] > termination
    env = {item["name"]: item for item in container(resources).get("env", [])}
    replica = env["ARTIFACTD_REPLICA_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert replica == "metadata.name"
