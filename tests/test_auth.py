"""Authentication and authorization against a real server process started with a tokens file.

The matrix test walks every RPC of every artifactd service, read from the service descriptors,
for every role (reader, writer, admin; on one experiment or globally) on the caller's own
experiment and on another one, and checks the server's answer against `SPEC` below: the
permissions written down independently of the server's policy table. A new RPC without a line
in `SPEC` and a call in `CALLS` fails the test; so does one the server lets through or refuses
against the spec.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from artifactd.client import ArtifactClient
from artifactd.client.settings import ClientSettings
from artifactd.protocol.errors import PermissionDenied, Unauthenticated
from artifactd.protocol.grants import new_token, token_digest
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd.v1 import run_service_pb2 as rpb
from artifactd.v1 import run_service_pb2_grpc as rpb_grpc
from artifactd_server.domain.policy import RULES

from servers import ServerProcess, run_cli, start_server

READER, WRITER, ADMIN = 1, 2, 3
ROLE_NAMES = {READER: "reader", WRITER: "writer", ADMIN: "admin"}
EXPERIMENT, SERVER, ANYONE = "experiment", "server", "anyone"

# What each RPC needs, as the product promises it (README "Authorization"): the role, and
# whether on the experiment the request touches, on the whole server, or for anyone signed in.
SPEC: dict[str, tuple[int, str]] = {
    "ArtifactService.LogArtifact": (WRITER, EXPERIMENT),
    "ArtifactService.LogArtifacts": (WRITER, EXPERIMENT),
    "ArtifactService.DownloadArtifact": (READER, EXPERIMENT),
    "ArtifactService.DownloadArtifacts": (READER, EXPERIMENT),
    "ArtifactService.ListArtifacts": (READER, EXPERIMENT),
    "ArtifactService.GetArtifact": (READER, EXPERIMENT),
    "ArtifactService.DeleteArtifacts": (ADMIN, EXPERIMENT),  # CVE-2024-4263: not EDIT
    "ArtifactService.GetCapabilities": (0, ANYONE),
    "ArtifactService.CreateMultipartUpload": (WRITER, EXPERIMENT),  # CVE-2026-2651
    "ArtifactService.GetMultipartUploadUrls": (WRITER, EXPERIMENT),
    "ArtifactService.ListMultipartUploadParts": (WRITER, EXPERIMENT),
    "ArtifactService.CompleteMultipartUpload": (WRITER, EXPERIMENT),
    "ArtifactService.AbortMultipartUpload": (WRITER, EXPERIMENT),
    "ArtifactService.StartResumableUpload": (WRITER, EXPERIMENT),
    "ArtifactService.QueryWriteStatus": (WRITER, EXPERIMENT),
    "ArtifactService.GetDownloadUrl": (READER, EXPERIMENT),  # CVE-2026-33866
    "RunService.CreateExperiment": (WRITER, SERVER),
    "RunService.GetExperiment": (READER, EXPERIMENT),
    "RunService.ListExperiments": (0, ANYONE),  # filtered: see its own test
    "RunService.DeleteExperiment": (ADMIN, EXPERIMENT),
    "RunService.RestoreExperiment": (ADMIN, EXPERIMENT),
    "RunService.CreateRun": (WRITER, EXPERIMENT),
    "RunService.GetRun": (READER, EXPERIMENT),
    "RunService.ListRuns": (READER, EXPERIMENT),
    "RunService.UpdateRun": (WRITER, EXPERIMENT),
    "RunService.DeleteRun": (ADMIN, EXPERIMENT),
    "RunService.RestoreRun": (ADMIN, EXPERIMENT),
    "RunService.CollectGarbage": (ADMIN, SERVER),
}

NONE = 0
OWN, OTHER, ALL = "own", "other", "all"
# principal -> (role, where it holds it: on the own experiment, on the other one, or on all);
# "none" holds a valid token and no role at all: deny by default.
PRINCIPALS = {
    "none": (NONE, ALL),
    "reader-own": (READER, OWN),
    "writer-own": (WRITER, OWN),
    "admin-own": (ADMIN, OWN),
    "writer-other": (WRITER, OTHER),
    "reader-all": (READER, ALL),
    "writer-all": (WRITER, ALL),
    "admin-all": (ADMIN, ALL),
}
DENIED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def service_methods() -> list[str]:
    names = []
    for module in (pb, rpb):
        for service in module.DESCRIPTOR.services_by_name.values():
            names += [f"{service.name}.{method.name}" for method in service.methods]
    return names


@dataclass
class Experiment:
    experiment_id: str
    name: str
    run_id: str

    @property
    def run_root(self) -> str:
        """The run's artifact folder spelled as a plain path under the default root."""
        return f"{self.experiment_id}/{self.run_id}/artifacts"


class Harness:
    """The server, one channel, and a token per principal (plus a setup twin of each)."""

    def __init__(self, server: ServerProcess, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens
        self.override: dict[str, list[tuple[str, str]]] = {}
        self.channel = grpc.insecure_channel(server.target)
        self.artifacts = pb_grpc.ArtifactServiceStub(self.channel)
        self.runs = rpb_grpc.RunServiceStub(self.channel)
        self.own: Experiment
        self.other: Experiment
        self.spare: Experiment  # an experiment tests may wipe

    def md(self, principal: str) -> list[tuple[str, str]]:
        if principal in self.override:
            return self.override[principal]
        return [("authorization", f"Bearer {self.tokens[principal]}")]

    def setup(self, principal: str = "setup") -> list[tuple[str, str]]:
        """Acting as `principal` with admin rights everywhere (its twin token, if it has one)."""
        twin = principal + "+setup"
        return self.md(twin if twin in self.tokens else "setup")

    def experiment(self, name: str) -> Experiment:
        made = self.runs.CreateExperiment(
            rpb.CreateExperimentRequest(name=name), metadata=self.setup()
        )
        experiment_id = made.experiment.experiment_id
        run = self.runs.CreateRun(
            rpb.CreateRunRequest(experiment_id=experiment_id), metadata=self.setup()
        ).run
        found = Experiment(experiment_id, name, run.run_id)
        self.put(found, "model.bin", b"weights")
        return found

    def put(self, experiment: Experiment, path: str, data: bytes, who: str = "setup") -> None:
        self.artifacts.LogArtifact(
            upload(path, data, experiment.run_id), metadata=self.setup(who), timeout=30
        )

    def fresh_run(self, experiment: Experiment, deleted: bool = False) -> str:
        run_id = self.runs.CreateRun(
            rpb.CreateRunRequest(experiment_id=experiment.experiment_id), metadata=self.setup()
        ).run.run_id
        if deleted:
            self.runs.DeleteRun(rpb.DeleteRunRequest(run_id=run_id), metadata=self.setup())
        return run_id

    def session(self, experiment: Experiment, principal: str) -> str:
        """An open resumable upload owned by `principal` (made with its twin token)."""
        started = self.artifacts.StartResumableUpload(
            pb.StartResumableUploadRequest(
                path=f"sessions/{uuid.uuid4().hex}.bin", run_id=experiment.run_id, size=8
            ),
            metadata=self.setup(principal),
        )
        assert started.supported and started.upload_id
        return started.upload_id


def upload(path: str, data: bytes, run_id: str = "") -> Iterator[pb.LogArtifactRequest]:
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path, run_id=run_id))
    yield pb.LogArtifactRequest(data=data)
    yield pb.LogArtifactRequest(finish=pb.UploadFinish())


def upload_many(path: str, data: bytes, run_id: str) -> Iterator[pb.LogArtifactsRequest]:
    yield pb.LogArtifactsRequest(header=pb.UploadHeader(path=path, run_id=run_id), data=data)
    yield pb.LogArtifactsRequest(finish=pb.UploadFinish())


def target(e: Experiment, mode: str, path: str) -> dict[str, str]:
    """A request's path and run_id: by run, or the same place as a plain path."""
    if mode == "run":
        return {"run_id": e.run_id, "path": path}
    return {"path": f"{e.run_root}/{path}".rstrip("/")}


Call = Callable[[Harness, str, Experiment, str], Any]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _delete_artifacts(h: Harness, p: str, e: Experiment, mode: str) -> Any:
    name = _unique("doomed") + ".txt"
    h.put(e, name, b"x")
    return h.artifacts.DeleteArtifacts(
        pb.DeleteArtifactsRequest(**target(e, mode, name)), metadata=h.md(p)
    )


def _delete_experiment(h: Harness, p: str, e: Experiment, mode: str) -> Any:
    try:
        return h.runs.DeleteExperiment(
            rpb.DeleteExperimentRequest(experiment_id=e.experiment_id), metadata=h.md(p)
        )
    finally:
        _ensure_active(h, e)


def _restore_experiment(h: Harness, p: str, e: Experiment, mode: str) -> Any:
    h.runs.DeleteExperiment(
        rpb.DeleteExperimentRequest(experiment_id=e.experiment_id), metadata=h.setup()
    )
    try:
        return h.runs.RestoreExperiment(
            rpb.RestoreExperimentRequest(experiment_id=e.experiment_id), metadata=h.md(p)
        )
    finally:
        _ensure_active(h, e)


def _ensure_active(h: Harness, e: Experiment) -> None:
    found = h.runs.GetExperiment(
        rpb.GetExperimentRequest(experiment_id=e.experiment_id), metadata=h.setup()
    ).experiment
    if found.lifecycle_stage != rpb.LIFECYCLE_STAGE_ACTIVE:
        h.runs.RestoreExperiment(
            rpb.RestoreExperimentRequest(experiment_id=e.experiment_id), metadata=h.setup()
        )


def _get_experiment(h: Harness, p: str, e: Experiment, mode: str) -> Any:
    by = {"experiment_id": e.experiment_id} if mode == "run" else {"name": e.name}
    return h.runs.GetExperiment(rpb.GetExperimentRequest(**by), metadata=h.md(p))


def _with_run(fields: dict[str, str]) -> dict[str, str]:
    return {"run_id": "", **fields}


CALLS: dict[str, Call] = {
    "ArtifactService.LogArtifact": lambda h, p, e, m: h.artifacts.LogArtifact(
        upload(**target(e, m, _unique("log")), data=b"abc"), metadata=h.md(p)
    ),
    "ArtifactService.LogArtifacts": lambda h, p, e, m: h.artifacts.LogArtifacts(
        upload_many(**_with_run(target(e, m, _unique("many"))), data=b"abc"), metadata=h.md(p)
    ),
    "ArtifactService.DownloadArtifact": lambda h, p, e, m: list(
        h.artifacts.DownloadArtifact(
            pb.DownloadArtifactRequest(**target(e, m, "model.bin")), metadata=h.md(p)
        )
    ),
    "ArtifactService.DownloadArtifacts": lambda h, p, e, m: list(
        h.artifacts.DownloadArtifacts(
            pb.DownloadArtifactsRequest(**target(e, m, "")), metadata=h.md(p)
        )
    ),
    "ArtifactService.ListArtifacts": lambda h, p, e, m: h.artifacts.ListArtifacts(
        pb.ListArtifactsRequest(**target(e, m, "")), metadata=h.md(p)
    ),
    "ArtifactService.GetArtifact": lambda h, p, e, m: h.artifacts.GetArtifact(
        pb.GetArtifactRequest(**target(e, m, "model.bin")), metadata=h.md(p)
    ),
    "ArtifactService.DeleteArtifacts": _delete_artifacts,
    "ArtifactService.GetCapabilities": lambda h, p, e, m: h.artifacts.GetCapabilities(
        pb.GetCapabilitiesRequest(), metadata=h.md(p)
    ),
    "ArtifactService.CreateMultipartUpload": lambda h, p, e, m: h.artifacts.CreateMultipartUpload(
        pb.CreateMultipartUploadRequest(**target(e, m, _unique("mpu")), size=10),
        metadata=h.md(p),
    ),
    "ArtifactService.GetMultipartUploadUrls": lambda h, p, e, m: h.artifacts.GetMultipartUploadUrls(
        pb.GetMultipartUploadUrlsRequest(upload_id=h.session(e, p), part_numbers=[1]),
        metadata=h.md(p),
    ),
    "ArtifactService.ListMultipartUploadParts": lambda h, p, e, m: (
        h.artifacts.ListMultipartUploadParts(
            pb.ListMultipartUploadPartsRequest(upload_id=h.session(e, p)), metadata=h.md(p)
        )
    ),
    "ArtifactService.CompleteMultipartUpload": lambda h, p, e, m: (
        h.artifacts.CompleteMultipartUpload(
            pb.CompleteMultipartUploadRequest(upload_id=h.session(e, p)), metadata=h.md(p)
        )
    ),
    "ArtifactService.AbortMultipartUpload": lambda h, p, e, m: h.artifacts.AbortMultipartUpload(
        pb.AbortMultipartUploadRequest(upload_id=h.session(e, p)), metadata=h.md(p)
    ),
    "ArtifactService.StartResumableUpload": lambda h, p, e, m: h.artifacts.StartResumableUpload(
        pb.StartResumableUploadRequest(**target(e, m, _unique("resume")), size=10),
        metadata=h.md(p),
    ),
    "ArtifactService.QueryWriteStatus": lambda h, p, e, m: h.artifacts.QueryWriteStatus(
        pb.QueryWriteStatusRequest(upload_id=h.session(e, p)), metadata=h.md(p)
    ),
    "ArtifactService.GetDownloadUrl": lambda h, p, e, m: h.artifacts.GetDownloadUrl(
        pb.GetDownloadUrlRequest(**target(e, m, "model.bin")), metadata=h.md(p)
    ),
    "RunService.CreateExperiment": lambda h, p, e, m: h.runs.CreateExperiment(
        rpb.CreateExperimentRequest(name=_unique("made-by-" + p)), metadata=h.md(p)
    ),
    "RunService.GetExperiment": _get_experiment,
    "RunService.ListExperiments": lambda h, p, e, m: h.runs.ListExperiments(
        rpb.ListExperimentsRequest(), metadata=h.md(p)
    ),
    "RunService.DeleteExperiment": _delete_experiment,
    "RunService.RestoreExperiment": _restore_experiment,
    "RunService.CreateRun": lambda h, p, e, m: h.runs.CreateRun(
        rpb.CreateRunRequest(experiment_id=e.experiment_id), metadata=h.md(p)
    ),
    "RunService.GetRun": lambda h, p, e, m: h.runs.GetRun(
        rpb.GetRunRequest(run_id=e.run_id), metadata=h.md(p)
    ),
    "RunService.ListRuns": lambda h, p, e, m: h.runs.ListRuns(
        rpb.ListRunsRequest(experiment_ids=[e.experiment_id]), metadata=h.md(p)
    ),
    "RunService.UpdateRun": lambda h, p, e, m: h.runs.UpdateRun(
        rpb.UpdateRunRequest(run_id=e.run_id, run_name=_unique("renamed")), metadata=h.md(p)
    ),
    "RunService.DeleteRun": lambda h, p, e, m: h.runs.DeleteRun(
        rpb.DeleteRunRequest(run_id=h.fresh_run(e)), metadata=h.md(p)
    ),
    "RunService.RestoreRun": lambda h, p, e, m: h.runs.RestoreRun(
        rpb.RestoreRunRequest(run_id=h.fresh_run(e, deleted=True)), metadata=h.md(p)
    ),
    "RunService.CollectGarbage": lambda h, p, e, m: list(
        h.runs.CollectGarbage(rpb.CollectGarbageRequest(dry_run=True), metadata=h.md(p))
    ),
}


def outcome(call: Callable[[], Any]) -> grpc.StatusCode:
    """The call's status code; for a LogArtifacts batch that went through, its first file's."""
    try:
        reply = call()
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    failed = [r.code for r in getattr(reply, "results", ()) if r.code]
    if failed:
        return next(c for c in grpc.StatusCode if c.value[0] == failed[0])
    return grpc.StatusCode.OK


def write_tokens(path: Path, tokens: dict[str, str], roles: dict[str, list[str]]) -> None:
    entries = [
        f'[[token]]\nprincipal = "{name.removesuffix("+setup")}"\n'
        f'sha256 = "{token_digest(tokens[name])}"\nroles = {roles[name]!r}\n'.replace("'", '"')
        for name in roles
    ]
    path.write_text("\n".join(entries))


def wait_until_admitted(h: Harness, principal: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        code = outcome(
            lambda: h.artifacts.GetCapabilities(
                pb.GetCapabilitiesRequest(), metadata=h.md(principal)
            )
        )
        if code == grpc.StatusCode.OK:
            return
        assert time.monotonic() < deadline, f"{principal} still refused ({code}) after SIGHUP"
        time.sleep(0.1)


def grant_of(h: Harness, role: int, where: str) -> list[str]:
    if role == NONE:
        return []
    experiment = {OWN: h.own.experiment_id, OTHER: h.other.experiment_id, ALL: ""}[where]
    return [ROLE_NAMES[role] + (f":{experiment}" if experiment else "")]


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    base = tmp_path_factory.mktemp("auth")
    tokens_file = base / "tokens.toml"
    tokens = {"setup": new_token()}
    write_tokens(tokens_file, tokens, {"setup": ["admin"]})
    server = start_server(
        base / "store", base / "run", "--auth-tokens-file", str(tokens_file), "--log-format", "json",
        client=ClientSettings(token=tokens["setup"]),
    )  # fmt: skip
    h = Harness(server, tokens)
    try:
        h.own = h.experiment("own")
        h.other = h.experiment("other")
        roles: dict[str, list[str]] = {"setup": ["admin"]}
        h.spare = h.experiment("spare")
        grants = {name: grant_of(h, role, where) for name, (role, where) in PRINCIPALS.items()}
        # the same role as reader-own, its experiment id spelled with a leading zero
        grants["reader-own-01"] = [f"reader:0{h.own.experiment_id}"]
        grants["admin-spare"] = [f"admin:{h.spare.experiment_id}"]
        for name, granted in grants.items():
            tokens[name], tokens[name + "+setup"] = new_token(), new_token()
            roles[name], roles[name + "+setup"] = granted, ["admin"]
        write_tokens(tokens_file, tokens, roles)
        server.process.send_signal(signal.SIGHUP)  # the new principals arrive by reload
        for name in grants:
            wait_until_admitted(h, name)
        yield h
    finally:
        h.channel.close()
        code = server.stop()
        assert code == 0, server.log_text()


def test_every_rpc_has_a_rule_a_spec_and_a_call() -> None:
    methods = service_methods()
    assert len(methods) >= 28
    missing_rules = [m for m in methods if f"/artifactd.v1.{m.replace('.', '/')}" not in RULES]
    assert not missing_rules, f"RPCs without an authorization rule: {missing_rules}"
    assert sorted(SPEC) == sorted(methods), "SPEC must list exactly the service's RPCs"
    assert sorted(CALLS) == sorted(methods), "CALLS must exercise exactly the service's RPCs"


def test_the_whole_authorization_matrix(harness: Harness) -> None:
    """Every RPC x every principal x own/other experiment (x run-addressed/plain path, or
    id/name): 28 x 8 x 2 x 2 = 896 calls, each answered as SPEC says."""
    mismatches = []
    checked = refused = 0
    experiments = {OWN: harness.own, OTHER: harness.other}
    for method in service_methods():
        needed, scope = SPEC[method]
        for principal, (role, where) in PRINCIPALS.items():
            for whose, experiment in experiments.items():
                for mode in ("run", "path"):
                    if scope == EXPERIMENT:
                        allowed = role >= needed and where in (ALL, whose)
                    elif scope == SERVER:
                        allowed = role >= needed and where == ALL
                    else:
                        allowed = True
                    code = outcome(
                        lambda: CALLS[method](harness, principal, experiment, mode)  # noqa: B023
                    )
                    checked += 1
                    refused += not allowed
                    if (allowed and code in DENIED) or (
                        not allowed and code != grpc.StatusCode.PERMISSION_DENIED
                    ):
                        mismatches.append(
                            f"{method} as {principal} on {whose} ({mode}): {code.name}, "
                            f"expected {'allowed' if allowed else 'PERMISSION_DENIED'}"
                        )
    figures = (
        f"authorization matrix: {len(SPEC)} RPCs x {len(PRINCIPALS)} principals x "
        f"{len(experiments)} experiments x 2 addressings = {checked} calls, {refused} refused "
        f"and {checked - refused} allowed as SPEC says, {len(mismatches)} mismatches"
    )
    print(figures)
    assert checked == len(SPEC) * len(PRINCIPALS) * 4, figures
    assert not mismatches, figures + "\n" + "\n".join(mismatches)


def test_a_principal_without_roles_is_refused_everything_but_empty_listings(
    harness: Harness,
) -> None:
    """Deny by default: "none" holds a valid token and no grant; besides the capabilities it
    may only list, and every listing is empty."""
    md = harness.md("none")
    experiments = harness.runs.ListExperiments(rpb.ListExperimentsRequest(), metadata=md)
    assert not experiments.experiments
    runs = harness.runs.ListRuns(rpb.ListRunsRequest(), metadata=md)
    assert not runs.runs
    allowed = [m for m, (role, scope) in SPEC.items() if scope == ANYONE]
    assert sorted(allowed) == ["ArtifactService.GetCapabilities", "RunService.ListExperiments"]


def test_every_rpc_refuses_callers_without_valid_credentials(harness: Harness) -> None:
    for metadata, hint in (
        ([], "requires authentication"),
        ([("authorization", f"Bearer {new_token()}")], "not valid"),
        ([("authorization", "Basic dXNlcjpwYXNz")], "must be 'Bearer <token>'"),
    ):
        harness.override["intruder"] = metadata
        for method in service_methods():
            try:
                CALLS[method](harness, "intruder", harness.own, "run")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED, (method, exc.code())
                assert hint in (exc.details() or ""), (method, exc.details())
            else:
                pytest.fail(f"{method} answered a caller without valid credentials")


def test_health_needs_no_credentials_and_reflection_does(harness: Harness) -> None:
    health = health_pb2_grpc.HealthStub(harness.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    stub = reflection_pb2_grpc.ServerReflectionStub(harness.channel)
    ask = reflection_pb2.ServerReflectionRequest(list_services="")
    with pytest.raises(grpc.RpcError) as refused:
        list(stub.ServerReflectionInfo(iter([ask]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    answers = list(stub.ServerReflectionInfo(iter([ask]), metadata=harness.md("reader-own")))
    names = {s.name for s in answers[0].list_services_response.service}
    assert "artifactd.v1.ArtifactService" in names


def test_listings_show_only_what_the_caller_may_read(harness: Harness) -> None:
    own, other = harness.own.experiment_id, harness.other.experiment_id
    listed = harness.runs.ListExperiments(
        rpb.ListExperimentsRequest(), metadata=harness.md("writer-own")
    )
    assert [e.experiment_id for e in listed.experiments] == [own]
    everything = harness.runs.ListExperiments(
        rpb.ListExperimentsRequest(), metadata=harness.md("reader-all")
    )
    assert {own, other} <= {e.experiment_id for e in everything.experiments}
    runs = harness.runs.ListRuns(rpb.ListRunsRequest(), metadata=harness.md("reader-own"))
    assert runs.runs and {r.experiment_id for r in runs.runs} == {own}
    all_runs = harness.runs.ListRuns(rpb.ListRunsRequest(), metadata=harness.md("reader-all"))
    assert {own, other} <= {r.experiment_id for r in all_runs.runs}


def test_plain_paths_outside_any_one_experiment_need_a_global_grant(harness: Harness) -> None:
    def listing(path: str, principal: str) -> grpc.StatusCode:
        request = pb.ListArtifactsRequest(path=path)
        return outcome(
            lambda: harness.artifacts.ListArtifacts(request, metadata=harness.md(principal))
        )

    for path in ("", harness.own.experiment_id + "x", "loose/file.txt"):
        assert listing(path, "admin-own") == grpc.StatusCode.PERMISSION_DENIED, path
        assert listing(path, "reader-all") in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)


def answer(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    """The status code and message of a call (OK and "" when it succeeds)."""
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, ""


RunCall = Callable[[Harness, str, str], Any]
# every RPC that can address a run by its id, as a call on run `r` (which the caller may not
# touch: nothing here may succeed)
RUN_ADDRESSED: dict[str, RunCall] = {
    "GetRun": lambda h, p, r: h.runs.GetRun(rpb.GetRunRequest(run_id=r), metadata=h.md(p)),
    "UpdateRun": lambda h, p, r: h.runs.UpdateRun(
        rpb.UpdateRunRequest(run_id=r, run_name="probe"), metadata=h.md(p)
    ),
    "DeleteRun": lambda h, p, r: h.runs.DeleteRun(rpb.DeleteRunRequest(run_id=r), metadata=h.md(p)),
    "RestoreRun": lambda h, p, r: h.runs.RestoreRun(
        rpb.RestoreRunRequest(run_id=r), metadata=h.md(p)
    ),
    "ListArtifacts": lambda h, p, r: h.artifacts.ListArtifacts(
        pb.ListArtifactsRequest(run_id=r), metadata=h.md(p)
    ),
    "GetArtifact": lambda h, p, r: h.artifacts.GetArtifact(
        pb.GetArtifactRequest(run_id=r, path="model.bin"), metadata=h.md(p)
    ),
    "DownloadArtifact": lambda h, p, r: list(
        h.artifacts.DownloadArtifact(
            pb.DownloadArtifactRequest(run_id=r, path="model.bin"), metadata=h.md(p)
        )
    ),
    "DownloadArtifacts": lambda h, p, r: list(
        h.artifacts.DownloadArtifacts(pb.DownloadArtifactsRequest(run_id=r), metadata=h.md(p))
    ),
    "GetDownloadUrl": lambda h, p, r: h.artifacts.GetDownloadUrl(
        pb.GetDownloadUrlRequest(run_id=r, path="model.bin"), metadata=h.md(p)
    ),
    "DeleteArtifacts": lambda h, p, r: h.artifacts.DeleteArtifacts(
        pb.DeleteArtifactsRequest(run_id=r, path="model.bin"), metadata=h.md(p)
    ),
    "LogArtifact": lambda h, p, r: h.artifacts.LogArtifact(
        upload("probe.txt", b"x", r), metadata=h.md(p)
    ),
    "LogArtifacts": lambda h, p, r: h.artifacts.LogArtifacts(
        upload_many("probe.txt", b"x", r), metadata=h.md(p)
    ),
    "StartResumableUpload": lambda h, p, r: h.artifacts.StartResumableUpload(
        pb.StartResumableUploadRequest(run_id=r, path="probe.bin", size=1), metadata=h.md(p)
    ),
    "CreateMultipartUpload": lambda h, p, r: h.artifacts.CreateMultipartUpload(
        pb.CreateMultipartUploadRequest(run_id=r, path="probe.bin", size=1), metadata=h.md(p)
    ),
}

PathCall = Callable[[Harness, str, str], Any]
# every RPC that takes a plain path, as a call on path `a`
PATH_ADDRESSED: dict[str, PathCall] = {
    "ListArtifacts": lambda h, p, a: h.artifacts.ListArtifacts(
        pb.ListArtifactsRequest(path=a), metadata=h.md(p)
    ),
    "GetArtifact": lambda h, p, a: h.artifacts.GetArtifact(
        pb.GetArtifactRequest(path=a), metadata=h.md(p)
    ),
    "DownloadArtifact": lambda h, p, a: list(
        h.artifacts.DownloadArtifact(pb.DownloadArtifactRequest(path=a), metadata=h.md(p))
    ),
    "GetDownloadUrl": lambda h, p, a: h.artifacts.GetDownloadUrl(
        pb.GetDownloadUrlRequest(path=a), metadata=h.md(p)
    ),
    "DeleteArtifacts": lambda h, p, a: h.artifacts.DeleteArtifacts(
        pb.DeleteArtifactsRequest(path=a), metadata=h.md(p)
    ),
    "LogArtifact": lambda h, p, a: h.artifacts.LogArtifact(upload(a, b"x"), metadata=h.md(p)),
    "StartResumableUpload": lambda h, p, a: h.artifacts.StartResumableUpload(
        pb.StartResumableUploadRequest(path=a, size=1), metadata=h.md(p)
    ),
}


def _experiment_calls(h: Harness, p: str) -> dict[str, Callable[[str], Any]]:
    """Every RPC that names an experiment by id, as a call on id `x`."""
    md = h.md(p)
    return {
        "GetExperiment": lambda x: h.runs.GetExperiment(
            rpb.GetExperimentRequest(experiment_id=x), metadata=md
        ),
        "CreateRun": lambda x: h.runs.CreateRun(rpb.CreateRunRequest(experiment_id=x), metadata=md),
        "DeleteExperiment": lambda x: h.runs.DeleteExperiment(
            rpb.DeleteExperimentRequest(experiment_id=x), metadata=md
        ),
        "RestoreExperiment": lambda x: h.runs.RestoreExperiment(
            rpb.RestoreExperimentRequest(experiment_id=x), metadata=md
        ),
        "ListRuns": lambda x: h.runs.ListRuns(rpb.ListRunsRequest(experiment_ids=[x]), metadata=md),
    }


def _by_name(h: Harness, principal: str) -> Callable[[str], Any]:
    md = h.md(principal)
    return lambda name: h.runs.GetExperiment(rpb.GetExperimentRequest(name=name), metadata=md)


def test_refusals_do_not_tell_what_exists(harness: Harness) -> None:
    """A scoped caller asking about another experiment's run, name, id or path gets the very
    answer it gets for one that does not exist: same code, same message (but for the name it
    asked about); a plain path's refusal never names the experiment the path is in."""
    h = harness
    other = h.other
    missing_run, missing_name, missing_id = uuid.uuid4().hex, _unique("nothing"), "2147483000"
    their_path = f"{other.run_root}/model.bin"
    nowhere = (f"{missing_id}/{missing_run}/artifacts/model.bin", "loose/model.bin")
    compared = 0

    def alike(theirs: tuple[grpc.StatusCode, str], mine: tuple[grpc.StatusCode, str],
              their_text: str, missing_text: str, what: str) -> None:  # fmt: skip
        assert theirs[0] == grpc.StatusCode.PERMISSION_DENIED, (what, theirs)
        assert (theirs[0], theirs[1].replace(their_text, "<X>")) == (
            mine[0], mine[1].replace(missing_text, "<X>")
        ), what  # fmt: skip
        assert f"experiment {other.experiment_id}" not in theirs[1].replace(their_text, "")

    for principal in ("none", "reader-own", "admin-own"):
        for name, run_call in RUN_ADDRESSED.items():
            theirs = answer(lambda: run_call(h, principal, other.run_id))  # noqa: B023
            mine = answer(lambda: run_call(h, principal, missing_run))  # noqa: B023
            alike(theirs, mine, other.run_id, missing_run, f"{principal} {name}")
            compared += 1
        for name, experiment_call in _experiment_calls(h, principal).items():
            theirs = answer(lambda: experiment_call(other.experiment_id))  # noqa: B023
            mine = answer(lambda: experiment_call(missing_id))  # noqa: B023
            alike(theirs, mine, other.experiment_id, missing_id, name)
            compared += 1
        by_name = _by_name(h, principal)
        theirs, mine = answer(lambda: by_name(other.name)), answer(lambda: by_name(missing_name))  # noqa: B023
        alike(theirs, mine, repr(other.name)[1:-1], missing_name, "GetExperiment(name)")
        compared += 1
        for name, path_call in PATH_ADDRESSED.items():
            theirs = answer(lambda: path_call(h, principal, their_path))  # noqa: B023
            for path in nowhere:
                mine = answer(lambda: path_call(h, principal, path))  # noqa: B023
                alike(theirs, mine, their_path, path, name)
                compared += 1
    print(f"refusals compared with the answer for something missing: {compared}")
    # a caller who may read every experiment learns what is missing, even when refused a write
    for call in (
        lambda: h.runs.GetRun(rpb.GetRunRequest(run_id=missing_run), metadata=h.md("reader-all")),
        lambda: RUN_ADDRESSED["UpdateRun"](h, "reader-all", missing_run),
        lambda: h.runs.GetExperiment(
            rpb.GetExperimentRequest(name=missing_name), metadata=h.md("reader-all")
        ),
    ):
        assert answer(call)[0] == grpc.StatusCode.NOT_FOUND


def test_a_deleted_runs_artifacts_stay_whatever_the_spelling(harness: Harness) -> None:
    """Probe defect: DeleteArtifacts(path="<exp>/<run>") removed a deleted run's artifacts
    while its other spellings were FAILED_PRECONDITION. Every spelling of a delete, and every
    upload into it, is refused until the run is restored."""
    h = harness
    fresh = h.experiment(_unique("deleted-run"))
    run_id = h.fresh_run(fresh)
    run = Experiment(fresh.experiment_id, fresh.name, run_id)
    h.put(run, "keep.txt", b"keep")
    h.runs.DeleteRun(rpb.DeleteRunRequest(run_id=run_id), metadata=h.setup())
    folder = f"{fresh.experiment_id}/{run_id}"
    deletes: list[dict[str, str]] = [
        {"run_id": run_id, "path": "keep.txt"},
        {"run_id": run_id, "path": ""},
        {"path": f"{folder}/artifacts/keep.txt"},
        {"path": f"{folder}/artifacts"},
        {"path": folder},
        {"path": fresh.experiment_id},  # the experiment's folder holds the deleted run
    ]
    for fields in deletes:
        code, message = answer(
            lambda: h.artifacts.DeleteArtifacts(
                pb.DeleteArtifactsRequest(**fields),  # noqa: B023
                metadata=h.md("admin-all"),
            )
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION, (fields, code, message)
        assert f"run {run_id} is deleted" in message
    writes = {
        "LogArtifact": lambda t: h.artifacts.LogArtifact(
            upload(**t, data=b"new"), metadata=h.md("admin-all")
        ),
        "LogArtifacts": lambda t: h.artifacts.LogArtifacts(
            upload_many(**_with_run(t), data=b"new"), metadata=h.md("admin-all")
        ),
        "StartResumableUpload": lambda t: h.artifacts.StartResumableUpload(
            pb.StartResumableUploadRequest(**t, size=3), metadata=h.md("admin-all")
        ),
    }
    for name, write in writes.items():
        for fields in ({"run_id": run_id, "path": "new.txt"},
                       {"path": f"{folder}/artifacts/new.txt"}):  # fmt: skip
            reply: Any = None
            try:
                reply = write(fields)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.FAILED_PRECONDITION, (name, fields)
            else:  # LogArtifacts reports per file
                assert reply.results[0].code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
    stat = h.artifacts.GetArtifact(
        pb.GetArtifactRequest(run_id=run_id, path="keep.txt"), metadata=h.md("reader-all")
    )
    assert stat.file.file_size == 4
    h.runs.RestoreRun(rpb.RestoreRunRequest(run_id=run_id), metadata=h.setup())
    gone = h.artifacts.DeleteArtifacts(pb.DeleteArtifactsRequest(path=folder), metadata=h.setup())
    assert gone.existed


ROOT_SPELLINGS = ("", "/", ".", "./", "//", "/.", "\\", "%2F", "..")


def test_deleting_the_root_or_an_experiments_root_needs_admin(harness: Harness) -> None:
    """The root (every spelling) is never deleted: scoped callers are refused, a global admin
    is told it cannot be; an experiment's folder takes admin on that experiment (or global),
    and its non-canonical spellings are INVALID_ARGUMENT for everyone."""
    h = harness
    spare = h.spare.experiment_id

    def delete(path: str, principal: str) -> grpc.StatusCode:
        request = pb.DeleteArtifactsRequest(path=path)
        return outcome(lambda: h.artifacts.DeleteArtifacts(request, metadata=h.md(principal)))

    everyone = [*PRINCIPALS, "admin-spare"]
    tried = 0
    for spelling in ROOT_SPELLINGS:
        for principal in everyone:
            code = delete(spelling, principal)
            tried += 1
            if spelling == "" and PRINCIPALS.get(principal) != (ADMIN, ALL):
                assert code == grpc.StatusCode.PERMISSION_DENIED, (spelling, principal, code)
            else:
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (spelling, principal, code)
    for spelling in (f"{spare}/", f"./{spare}", f"/{spare}", f"{spare}/.", f"{spare}//",
                     f"{spare}/../{spare}"):  # fmt: skip
        for principal in everyone:
            assert delete(spelling, principal) == grpc.StatusCode.INVALID_ARGUMENT, spelling
            tried += 1
    for principal in ("none", "reader-own", "writer-own", "admin-own", "writer-other",
                      "reader-all", "writer-all"):  # fmt: skip
        assert delete(spare, principal) == grpc.StatusCode.PERMISSION_DENIED, principal
        tried += 1
    listed = h.artifacts.ListArtifacts(
        pb.ListArtifactsRequest(path=spare, recursive=True), metadata=h.setup()
    )
    assert any(f.path.endswith("model.bin") for f in listed.files)
    assert delete(spare, "admin-spare") == grpc.StatusCode.OK
    tried += 1
    print(f"root and experiment-root deletes tried: {tried}")
    listed = h.artifacts.ListArtifacts(
        pb.ListArtifactsRequest(path=h.own.experiment_id, recursive=True), metadata=h.setup()
    )
    assert listed.files, "another experiment's artifacts were touched"


def test_one_code_per_situation_whoever_asks_about_upload_ids(harness: Harness) -> None:
    """Probe defects: the same request got different codes by caller. Now another
    principal's upload id is NOT_FOUND (Abort: existed=false) for everyone, and an empty one
    INVALID_ARGUMENT for everyone."""
    h = harness
    theirs = h.session(h.own, "writer-own")
    callers = [p for p in PRINCIPALS if p != "writer-own"]
    upload_calls: dict[str, Callable[[str, str], Any]] = {
        "QueryWriteStatus": lambda u, p: h.artifacts.QueryWriteStatus(
            pb.QueryWriteStatusRequest(upload_id=u), metadata=h.md(p)
        ),
        "GetMultipartUploadUrls": lambda u, p: h.artifacts.GetMultipartUploadUrls(
            pb.GetMultipartUploadUrlsRequest(upload_id=u, part_numbers=[1]), metadata=h.md(p)
        ),
        "ListMultipartUploadParts": lambda u, p: h.artifacts.ListMultipartUploadParts(
            pb.ListMultipartUploadPartsRequest(upload_id=u), metadata=h.md(p)
        ),
        "CompleteMultipartUpload": lambda u, p: h.artifacts.CompleteMultipartUpload(
            pb.CompleteMultipartUploadRequest(upload_id=u), metadata=h.md(p)
        ),
        "LogArtifact": lambda u, p: h.artifacts.LogArtifact(
            iter(
                [
                    pb.LogArtifactRequest(header=pb.UploadHeader(upload_id=u), data=b"12345678"),
                    pb.LogArtifactRequest(finish=pb.UploadFinish()),
                ]
            ),
            metadata=h.md(p),
        ),
    }
    abort = h.artifacts.AbortMultipartUpload
    for name, call in upload_calls.items():
        answers = {p: answer(lambda: call(theirs, p)) for p in callers}  # noqa: B023
        assert {a[0] for a in answers.values()} == {grpc.StatusCode.NOT_FOUND}, (name, answers)
        assert len({a[1] for a in answers.values()}) == 1, (name, answers)
    for p in callers:
        reply = abort(pb.AbortMultipartUploadRequest(upload_id=theirs), metadata=h.md(p))
        assert not reply.existed, p
    status = h.artifacts.QueryWriteStatus(
        pb.QueryWriteStatusRequest(upload_id=theirs), metadata=h.md("writer-own")
    )
    assert status.size == 8, "someone else's calls touched the upload"
    everyone = list(PRINCIPALS)
    empty = {**upload_calls, "AbortMultipartUpload": lambda u, p: abort(
        pb.AbortMultipartUploadRequest(upload_id=u), metadata=h.md(p))}  # fmt: skip
    del empty["LogArtifact"]  # an empty upload_id there starts a new upload
    for name, call in empty.items():
        answers = {p: answer(lambda: call("", p)) for p in everyone}  # noqa: B023
        assert {a[0] for a in answers.values()} == {grpc.StatusCode.INVALID_ARGUMENT}, answers
        assert len({a[1] for a in answers.values()}) == 1, (name, answers)


def test_one_code_per_situation_whoever_asks_about_experiment_and_run_ids(
    harness: Harness,
) -> None:
    """Probe defects: a malformed experiment id was PERMISSION_DENIED or INVALID_ARGUMENT by
    caller, and the grant "reader:01" did not match "1" (nor "reader:1" "01"). Now a malformed
    id is INVALID_ARGUMENT for everyone and "01" is experiment 1 in grants and requests."""
    h = harness
    everyone = list(PRINCIPALS)
    for bad in ("abc", "-1", "1.5", " 1", "99999999999", "1e3"):
        for p in everyone:
            for name, experiment_call in _experiment_calls(h, p).items():
                code = outcome(lambda: experiment_call(bad))  # noqa: B023
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad, p, name, code)
    for bad_run in ("xyz", uuid.uuid4().hex.upper(), "../" + uuid.uuid4().hex):
        for p in everyone:
            for name, run_call in RUN_ADDRESSED.items():
                code = outcome(lambda: run_call(h, p, bad_run))  # noqa: B023
                assert code == grpc.StatusCode.INVALID_ARGUMENT, (bad_run, p, name, code)
    for p in everyone:  # GetExperiment takes an id or a name: both, or neither, is malformed
        for request in (rpb.GetExperimentRequest(),
                        rpb.GetExperimentRequest(experiment_id=h.other.experiment_id,
                                                 name=h.other.name)):  # fmt: skip
            code = outcome(lambda: h.runs.GetExperiment(request, metadata=h.md(p)))  # noqa: B023
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (p, request, code)
    own, zero = h.own.experiment_id, "0" + h.own.experiment_id
    for p in ("reader-own", "reader-own-01", "reader-all"):
        for x in (own, zero):
            got = h.runs.GetExperiment(rpb.GetExperimentRequest(experiment_id=x), metadata=h.md(p))
            assert got.experiment.experiment_id == own, (p, x)
            runs = h.runs.ListRuns(rpb.ListRunsRequest(experiment_ids=[x]), metadata=h.md(p))
            assert runs.runs, (p, x)
    listed = h.runs.ListExperiments(rpb.ListExperimentsRequest(), metadata=h.md("reader-own-01"))
    assert [e.experiment_id for e in listed.experiments] == [own]
    refused = outcome(lambda: _experiment_calls(h, "reader-own-01")["GetExperiment"](
        "0" + h.other.experiment_id))  # fmt: skip
    assert refused == grpc.StatusCode.PERMISSION_DENIED


def test_a_missing_run_is_not_revealed_to_callers_without_a_global_grant(
    harness: Harness,
) -> None:
    missing = uuid.uuid4().hex
    request = rpb.GetRunRequest(run_id=missing)
    scoped = outcome(lambda: harness.runs.GetRun(request, metadata=harness.md("admin-own")))
    assert scoped == grpc.StatusCode.PERMISSION_DENIED
    everywhere = outcome(lambda: harness.runs.GetRun(request, metadata=harness.md("reader-all")))
    assert everywhere == grpc.StatusCode.NOT_FOUND


def test_an_upload_id_is_bound_to_the_principal_that_opened_it(harness: Harness) -> None:
    """CVE-2026-2651's other half: another writer cannot continue or complete my upload."""
    upload_id = harness.session(harness.own, "writer-own")
    for method, request in (
        (harness.artifacts.QueryWriteStatus, pb.QueryWriteStatusRequest(upload_id=upload_id)),
        (harness.artifacts.CompleteMultipartUpload,
         pb.CompleteMultipartUploadRequest(upload_id=upload_id)),
    ):  # fmt: skip
        code = outcome(lambda: method(request, metadata=harness.md("admin-all")))  # noqa: B023
        assert code == grpc.StatusCode.NOT_FOUND, (method, code)
    aborted = harness.artifacts.AbortMultipartUpload(  # idempotent: "nothing of yours there"
        pb.AbortMultipartUploadRequest(upload_id=upload_id), metadata=harness.md("admin-all")
    )
    assert not aborted.existed
    status = harness.artifacts.QueryWriteStatus(
        pb.QueryWriteStatusRequest(upload_id=upload_id), metadata=harness.md("writer-own")
    )
    assert status.size == 8
    # continuing it through LogArtifact as someone else is refused the same way
    header = pb.UploadHeader(upload_id=upload_id, offset=0)
    code = outcome(
        lambda: harness.artifacts.LogArtifact(
            iter([pb.LogArtifactRequest(header=header, data=b"12345678"),
                  pb.LogArtifactRequest(finish=pb.UploadFinish())]),
            metadata=harness.md("admin-all"),
        )
    )  # fmt: skip
    assert code == grpc.StatusCode.NOT_FOUND


def test_a_batch_stops_at_the_first_file_the_caller_may_not_write(harness: Harness) -> None:
    own, other = harness.own, harness.other
    allowed, forbidden = _unique("ok") + ".txt", _unique("no") + ".txt"

    def batch() -> Iterator[pb.LogArtifactsRequest]:
        yield from upload_many(allowed, b"mine", own.run_id)
        yield from upload_many(forbidden, b"theirs", other.run_id)

    with pytest.raises(grpc.RpcError) as refused:
        harness.artifacts.LogArtifacts(batch(), metadata=harness.md("writer-own"))
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert f"run {other.run_id} does not exist or writer-own may not" in (
        refused.value.details() or ""
    )
    with ArtifactClient(harness.server.target, settings=_as("admin-all", harness)) as client:
        assert client.get_artifact_info(f"{own.run_root}/{allowed}").file_size == 4
        assert client.list_artifacts(other.run_root) and not [
            f for f in client.list_artifacts(other.run_root) if f.path.endswith(forbidden)
        ]


def _as(principal: str, harness: Harness) -> ClientSettings:
    return ClientSettings(token=harness.tokens[principal], max_retries=0, rpc_timeout=10)


def test_the_client_library_sends_its_token(harness: Harness, tmp_path: Path) -> None:
    source = tmp_path / "weights.bin"
    source.write_bytes(os.urandom(4096))
    own = harness.own
    with ArtifactClient(harness.server.target, settings=_as("writer-own", harness)) as client:
        client.log_artifact(source, f"{own.run_root}/client")
        back = client.download_artifacts(f"{own.run_root}/client/weights.bin", tmp_path / "b")
        assert Path(back).read_bytes() == source.read_bytes()
        with pytest.raises(PermissionDenied, match="needs the 'writer' role"):
            client.log_artifact(source, f"{harness.other.run_root}/client")
        with pytest.raises(PermissionDenied, match="'admin' role"):
            client.delete_artifacts(f"{own.run_root}/client")
    with (
        ArtifactClient(harness.server.target, settings=ClientSettings(max_retries=0)) as anonymous,
        pytest.raises(Unauthenticated, match="ARTIFACTD_TOKEN"),
    ):
        anonymous.list_artifacts(own.run_root)


def _cli(harness: Harness, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # no token but the one the test gives
    return run_cli(
        *args, env={"ARTIFACTD_TOKEN": "", "ARTIFACTD_SERVER": harness.server.target, **env}
    )


def test_the_cli_takes_a_token_file_or_variable(harness: Harness, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(harness.tokens["reader-own"] + "\n")
    listed = _cli(harness, {}, "--token-file", str(token_file), "artifacts", "list",
                  harness.own.run_root)  # fmt: skip
    assert listed.returncode == 0 and "model.bin" in listed.stdout, listed.stderr
    by_variable = _cli(harness, {"ARTIFACTD_TOKEN": harness.tokens["reader-own"]},
                       "artifacts", "list", harness.other.run_root)  # fmt: skip
    assert by_variable.returncode == 1
    assert by_variable.stderr.count("\n") == 1, by_variable.stderr
    assert "does not exist or reader-own may not do this" in by_variable.stderr
    nothing = _cli(harness, {}, "artifacts", "list", harness.own.run_root)
    assert nothing.returncode == 1 and "requires authentication" in nothing.stderr


def test_token_create_appends_an_entry_the_server_accepts_after_sighup(
    harness: Harness, tmp_path: Path
) -> None:
    tokens_file = Path(harness.server.extra[harness.server.extra.index("--auth-tokens-file") + 1])
    made = _cli(harness, {}, "token", "create", "--principal", "late-comer", "--role",
                f"reader:{harness.own.experiment_id}", "--append", str(tokens_file))  # fmt: skip
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("adt_") and token not in tokens_file.read_text()
    harness.tokens["late-comer"] = token
    harness.server.process.send_signal(signal.SIGHUP)
    wait_until_admitted(harness, "late-comer")
    # a broken file on the next reload keeps the credentials in force
    good = tokens_file.read_text()
    tokens_file.write_text(good + "\n[[token]]\nprincipal = 1\n")
    try:
        harness.server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "NOT reloaded" not in harness.server.log_text():
            assert time.monotonic() < deadline, "the failed reload was not logged"
            time.sleep(0.1)
        wait_until_admitted(harness, "late-comer", timeout=2)
    finally:
        tokens_file.write_text(good)
    bad_role = _cli(harness, {}, "token", "create", "--principal", "x", "--role", "owner")
    assert bad_role.returncode == 2 and "unknown role 'owner'" in bad_role.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[token]]\nprincipal = 'a'\nsha256 = 'abc'\nroles = ['reader']\n", "64 hex digits"),
        ("[[token]]\nprincipal = 'a'\nsha256 = '" + "a" * 64 + "'\nroles = 'reader'\n",
         "must be a list"),
        ("[[token]]\nprincipal = 'a'\nsha256 = '" + "a" * 64 + "'\nroles = ['root']\n",
         "unknown role 'root'"),
        ("[[token]]\nprincipal = 'a'\nroles = ['reader']\n", "missing ['sha256']"),
        ("[[user]]\nname = 'a'\n", "unknown tables"),
        ("not toml [", "not valid TOML"),
    ],
)  # fmt: skip
def test_serve_refuses_a_bad_tokens_file_with_one_line(
    tmp_path: Path, content: str, message: str
) -> None:
    tokens_file = tmp_path / "tokens.toml"
    tokens_file.write_text(content)
    done = run_cli("serve", "--port", "0", "--auth-tokens-file", str(tokens_file), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("artifactd: cannot serve:") and message in last, last


def test_the_access_log_names_the_principal_and_never_the_token(harness: Harness) -> None:
    marker = _unique("logged")
    harness.artifacts.GetArtifact(
        pb.GetArtifactRequest(run_id=harness.own.run_id, path="model.bin"),
        metadata=[*harness.md("reader-own"), ("x-request-id", marker)],
    )
    deadline = time.monotonic() + 5
    while True:
        lines = [json.loads(line) for line in harness.server.log_text().splitlines() if line]
        entries = [e for e in lines if e.get("request_id") == marker]
        if entries or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert entries, "no access-log line for the call"
    assert entries[0]["principal"] == "reader-own"
    assert entries[0]["code"] == "OK"
    refused = [
        e
        for e in lines
        if e.get("principal") == "reader-own" and e.get("code") == "PERMISSION_DENIED"
    ]
    assert refused, "refused calls are logged with their principal too"
    text = harness.server.log_text()
    assert not [name for name, token in harness.tokens.items() if token in text]
