"""Finds the experiment a request touches, for the policy's `On` kinds.

An artifact request names a run (its experiment is the run's) or a plain path under the default
root, which belongs to the experiment whose artifact location contains it — or to no single
experiment (the root itself, a folder holding several experiments, files outside all of them),
which only a global grant reaches. An upload id is looked up as its owner's session, so another
caller's id is NOT_FOUND here exactly as in the servicer.
"""

from __future__ import annotations

from google.protobuf.message import Message

from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.paths import parse
from artifactd_server.domain.roots import ArtifactRoots, uri_of
from artifactd_server.store.tracking import TrackingStore, check_experiment_id
from artifactd_server.store.upload_sessions import UploadSessions

WHOLE_SERVER: None = None
"""The experiment of a resource that is not inside any one experiment."""


class Resources:
    def __init__(
        self, store: TrackingStore, roots: ArtifactRoots, sessions: UploadSessions
    ) -> None:
        self._store = store
        self._roots = roots
        self._sessions = sessions

    def of_target(self, run_id: str, path: str) -> str | None:
        if run_id:
            return self.of_run(run_id)
        parsed = parse(path, allow_root=True)
        return self._store.experiment_at(uri_of(self._roots.default, parsed))

    def of_run(self, run_id: str) -> str:
        return self._store.get_run(run_id).experiment_id

    def of_upload(self, upload_id: str, owner: str) -> str | None:
        session = self._sessions.get(upload_id, owner)
        if session.run_id:
            return self.of_run(session.run_id)
        root = self._roots.locate(session.root_uri)
        return self._store.experiment_at(uri_of(root.storage, parse(session.path)))

    def of_experiment(self, request: Message) -> str:
        experiment_id = getattr(request, "experiment_id", "")
        name = getattr(request, "name", "")  # GetExperiment may name it instead
        if experiment_id:
            return experiment_key(experiment_id)
        if name:
            return self._store.get_experiment(name=name).experiment_id
        raise InvalidArgument("give an experiment_id")


def experiment_key(experiment_id: str) -> str:
    """The id as grants hold it: "01" is experiment 1 (`InvalidArgument` if not an id)."""
    return str(check_experiment_id(experiment_id))
