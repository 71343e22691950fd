"""The target of the `mlflow.artifact_repository` entry point `artifactd`: a factory, not the
repository class itself.

MLflow loads every entry point of that group while `mlflow` is first imported. If the entry point
named the class in `artifactd.mlflow.repository`, a program importing the plugin before MLflow
(`from artifactd.mlflow import ArtifactdArtifactRepository`, then `import mlflow`) would make MLflow
load that module while it is still half-imported (it is the one importing MLflow), fail, and
leave the `artifactd` scheme unregistered with only a warning. This module imports nothing at
import time, so the entry point always loads; the repository class is imported when MLflow first
asks for an `artifactd://` repository. MLflow's registry accepts factories (it registers its own
`dbfs` one the same way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from artifactd.mlflow.repository import ArtifactdArtifactRepository


def artifactd_repository(
    artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
) -> ArtifactdArtifactRepository:
    """A new `ArtifactdArtifactRepository` for an `artifactd://` URI (MLflow calls this)."""
    from artifactd.mlflow.repository import ArtifactdArtifactRepository

    return ArtifactdArtifactRepository(artifact_uri, tracking_uri, registry_uri)
