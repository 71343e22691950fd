"""What an artifact request's `path` is relative to: the default root, or a run's artifact root.

A request naming a `run_id` is resolved through the backend store to the run's fixed artifact
URI, located inside the configured roots (never anywhere else), and its path is joined below
that. Writes (uploads, deletes) need an active run: a deleted run stays readable until garbage
collection, but nothing may be added to what GC is about to remove. Plain paths that lead into a
run's artifact root (`<experiment>/<run_id>/artifacts/...` under the default root) get the same
write check, so the rule cannot be side-stepped by spelling the path out; a plain-path delete
is also refused when it would remove a deleted run's artifact root from above (the run's
folder, its experiment's folder).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from artifactd.protocol.errors import FailedPrecondition, NotFound
from artifactd.protocol.ids import check_run_id, is_run_id
from artifactd.protocol.paths import ArtifactPath
from artifactd_server.domain.roots import ArtifactRoots, Location, uri_of
from artifactd_server.storage.base import Entry, Storage
from artifactd_server.store.schema import ACTIVE
from artifactd_server.store.tracking import Run, TrackingStore

_RUN_CACHE_SECONDS = 1.0  # how long a LogArtifacts stream trusts a run's state it looked up


@dataclass(frozen=True)
class Scope:
    """A base directory in one storage that request paths are relative to."""

    storage: Storage
    base: ArtifactPath
    run_id: str = ""

    def full(self, path: ArtifactPath) -> ArtifactPath:
        return ArtifactPath(self.base.parts + path.parts) if self.base.parts else path

    def relative(self, entry: Entry) -> Entry:
        if not self.base.parts:
            return entry
        return dataclasses.replace(
            entry, path=ArtifactPath(entry.path.parts[len(self.base.parts) :])
        )


class Scopes:
    """Resolves `run_id`s to scopes, checking the run's lifecycle for writes."""

    def __init__(self, roots: ArtifactRoots, store: TrackingStore) -> None:
        self._roots = roots
        self._store = store
        self.default = Scope(roots.default, ArtifactPath(()))

    def locate(self, uri: str) -> Location:
        """The root and path of a location URI recorded earlier (`PermissionDenied` outside)."""
        return self._roots.locate(uri)

    def for_read(self, run_id: str) -> Scope:
        if not run_id:
            return self.default
        return self._scope(self._run(run_id))

    def for_write(self, run_id: str, path: ArtifactPath) -> Scope:
        """The scope to write `path` in; `FailedPrecondition` when that is a deleted run."""
        if run_id:
            run = self._run(run_id)
            _refuse_deleted(run)
            return self._scope(run)
        self._guard_plain_write(path)
        return self.default

    def for_delete(self, run_id: str, path: ArtifactPath) -> Scope:
        """`for_write`, and for a plain path also refused when it holds a deleted run's
        artifacts (a run folder, an experiment's folder): a delete must not reach what a
        deleted run keeps until GC through a parent, whatever the spelling."""
        scope = self.for_write(run_id, path)
        if not run_id:
            run = self._store.deleted_run_within(uri_of(self._roots.default, path))
            if run is not None:
                _refuse_deleted(run)
        return scope

    def writer(self) -> WriteScopes:
        """A resolver for one upload stream, which looks each run up at most once a second."""
        return WriteScopes(self)

    def _run(self, run_id: str) -> Run:
        return self._store.get_run(check_run_id(run_id))

    def _scope(self, run: Run) -> Scope:
        location = self._roots.locate(run.artifact_uri)
        return Scope(location.storage, location.path, run.run_id)

    def _guard_plain_write(self, path: ArtifactPath) -> None:
        parts = path.parts
        if "artifacts" not in parts:
            return
        for index in range(len(parts) - 1):
            if parts[index + 1] != "artifacts" or not is_run_id(parts[index]):
                continue
            try:
                run = self._store.get_run(parts[index])
            except NotFound:
                continue
            run_root = ArtifactPath(parts[: index + 2])
            if run.artifact_uri == uri_of(self._roots.default, run_root):
                _refuse_deleted(run)


class WriteScopes:
    """`Scopes.for_write` with a short-lived per-stream cache of run lookups."""

    def __init__(self, scopes: Scopes) -> None:
        self._scopes = scopes
        self._cache: dict[str, tuple[Scope, float]] = {}

    def for_write(self, run_id: str, path: ArtifactPath) -> Scope:
        if not run_id:
            return self._scopes.for_write(run_id, path)
        now = time.monotonic()
        cached = self._cache.get(run_id)
        if cached is not None and now - cached[1] < _RUN_CACHE_SECONDS:
            return cached[0]
        scope = self._scopes.for_write(run_id, path)
        self._cache[run_id] = (scope, now)
        return scope


def _refuse_deleted(run: Run) -> None:
    if run.lifecycle_stage != ACTIVE:
        raise FailedPrecondition(
            f"run {run.run_id} is deleted: its artifacts can be read until garbage collection, "
            "but not written or deleted; restore the run to change them"
        )
