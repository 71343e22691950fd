"""The Python client library of artifactd."""

from artifactd.client.client import ArtifactClient, ArtifactInfo
from artifactd.client.settings import ClientSettings
from artifactd.client.target import ReservedStorageVariableWarning
from artifactd.client.tracking import (
    Experiment,
    GarbageEvent,
    GarbageSummary,
    Run,
    TrackingClient,
)

__all__ = [
    "ArtifactClient",
    "ArtifactInfo",
    "ClientSettings",
    "Experiment",
    "GarbageEvent",
    "GarbageSummary",
    "ReservedStorageVariableWarning",
    "Run",
    "TrackingClient",
]
