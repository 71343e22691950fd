"""Where `artifactd serve` and `artifactd gc` look by default, and the variables that move it.

One definition for both commands, so the same environment serves and collects.
"""

from __future__ import annotations

ARTIFACTS_DESTINATION = "./mlruns"
BACKEND_STORE_URI = "sqlite:///artifactd.db"
"""The embedded SQLite file, relative to the working directory: next to the default ./mlruns."""

ARTIFACTS_DESTINATION_VARIABLE = "ARTIFACTD_ARTIFACTS_DESTINATION"
BACKEND_STORE_VARIABLE = "ARTIFACTD_BACKEND_STORE_URI"
EXTRA_ROOTS_VARIABLE = "ARTIFACTD_EXTRA_ARTIFACT_ROOTS"
