"""The Python client library of artifactd."""

from artifactd.client.client import ArtifactClient, ArtifactInfo
from artifactd.client.settings import ClientSettings
from artifactd.client.target import ReservedStorageVariableWarning

__all__ = ["ArtifactClient", "ArtifactInfo", "ClientSettings", "ReservedStorageVariableWarning"]
