"""MLflow integration: an artifact repository for `artifactd://host:port/<path>` locations.

Installed with the client distribution (`pip install artifactd`, beside `mlflow` or
`mlflow-skinny`), which registers
`ArtifactdArtifactRepository` for the `artifactd` scheme through MLflow's
`mlflow.artifact_repository` entry point: an experiment whose `artifact_location` is
`artifactd://host:port/<path>` then logs, lists, downloads and deletes its runs' and models'
artifacts over gRPC, with artifactd's verified transfers.
"""

from artifactd.mlflow.repository import ArtifactdArtifactRepository

__all__ = ["ArtifactdArtifactRepository"]
