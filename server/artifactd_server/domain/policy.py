"""The one table that says what every RPC needs: which role, on what.

Roles follow MLflow's permissions: `reader` (READ) reads, `writer` (EDIT) adds and changes,
`admin` (MANAGE) deletes and collects. Deleting artifacts needs `admin`: MLflow let EDIT delete
them (CVE-2024-4263). Every multipart and presigned call is listed and checked against the
experiment its upload or file belongs to: MLflow left those routes out (CVE-2026-2651,
CVE-2026-33866). A method missing from `RULES` is refused, and a test walks the service
descriptors so a new RPC cannot ship without a line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from artifactd.protocol.grants import Role
from artifactd_server.domain.identity import Principal


class On(Enum):
    """What the role is needed on, found from the request (see `resources.py`)."""

    NOTHING = "no credentials needed"  # health checks: probes carry no token
    ANY = "any authenticated caller"
    EVERYTHING = "granted globally"
    TARGET = "the experiment of the request's run_id, or of its path"
    UPLOAD = "the experiment the open upload (upload_id) writes to"
    EXPERIMENT = "the request's experiment (experiment_id or name)"
    RUN = "the experiment of the request's run_id"
    EXPERIMENTS = "each of the request's experiment_ids"


@dataclass(frozen=True)
class Rule:
    on: On
    role: Role | None = None


READ, WRITE, ADMIN = Role.READER, Role.WRITER, Role.ADMIN
_ARTIFACTS = "/artifactd.v1.ArtifactService/"
_RUNS = "/artifactd.v1.RunService/"
_REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/"

RULES: dict[str, Rule] = {
    _ARTIFACTS + "LogArtifact": Rule(On.TARGET, WRITE),  # checked on the header message
    _ARTIFACTS + "LogArtifacts": Rule(On.TARGET, WRITE),  # checked on every file's header
    _ARTIFACTS + "DownloadArtifact": Rule(On.TARGET, READ),
    _ARTIFACTS + "DownloadArtifacts": Rule(On.TARGET, READ),
    _ARTIFACTS + "ListArtifacts": Rule(On.TARGET, READ),
    _ARTIFACTS + "GetArtifact": Rule(On.TARGET, READ),
    _ARTIFACTS + "DeleteArtifacts": Rule(On.TARGET, ADMIN),
    _ARTIFACTS + "GetCapabilities": Rule(On.ANY),
    _ARTIFACTS + "CreateMultipartUpload": Rule(On.TARGET, WRITE),
    _ARTIFACTS + "GetMultipartUploadUrls": Rule(On.UPLOAD, WRITE),
    _ARTIFACTS + "ListMultipartUploadParts": Rule(On.UPLOAD, WRITE),
    _ARTIFACTS + "CompleteMultipartUpload": Rule(On.UPLOAD, WRITE),
    _ARTIFACTS + "AbortMultipartUpload": Rule(On.UPLOAD, WRITE),
    _ARTIFACTS + "StartResumableUpload": Rule(On.TARGET, WRITE),
    _ARTIFACTS + "QueryWriteStatus": Rule(On.UPLOAD, WRITE),
    _ARTIFACTS + "GetDownloadUrl": Rule(On.TARGET, READ),
    _RUNS + "CreateExperiment": Rule(On.EVERYTHING, WRITE),
    _RUNS + "GetExperiment": Rule(On.EXPERIMENT, READ),
    _RUNS + "ListExperiments": Rule(On.ANY),  # the listing shows readable experiments only
    _RUNS + "DeleteExperiment": Rule(On.EXPERIMENT, ADMIN),
    _RUNS + "RestoreExperiment": Rule(On.EXPERIMENT, ADMIN),
    _RUNS + "CreateRun": Rule(On.EXPERIMENT, WRITE),
    _RUNS + "GetRun": Rule(On.RUN, READ),
    _RUNS + "ListRuns": Rule(On.EXPERIMENTS, READ),  # none named: readable experiments only
    _RUNS + "UpdateRun": Rule(On.RUN, WRITE),
    _RUNS + "DeleteRun": Rule(On.RUN, ADMIN),
    _RUNS + "RestoreRun": Rule(On.RUN, ADMIN),
    _RUNS + "CollectGarbage": Rule(On.EVERYTHING, ADMIN),
    "/grpc.health.v1.Health/Check": Rule(On.NOTHING),
    "/grpc.health.v1.Health/Watch": Rule(On.NOTHING),
    _REFLECTION + "ServerReflectionInfo": Rule(On.ANY),
}


def allows(principal: Principal, role: Role, experiment_id: str | None) -> bool:
    """Whether `principal` holds `role` on `experiment_id` (None: on everything)."""
    held = principal.role_on(experiment_id)
    return held is not None and held >= role


def readable_experiments(principal: Principal) -> frozenset[str] | None:
    """The experiments a listing may show: None for all, else exactly these ids."""
    if allows(principal, Role.READER, None):
        return None
    return frozenset(g.experiment_id for g in principal.grants if g.experiment_id is not None)
