"""Where `artifactd serve` and `artifactd gc` look by default, and the environment variables
the server and the client read.

One definition for both commands, so the same environment serves and collects; the client's
variable names live here too (not in `artifactd.client`), so the CLI's root command can name
them in its help without importing the client library and grpc.
"""

from __future__ import annotations

ARTIFACTS_DESTINATION = "./mlruns"
BACKEND_STORE_URI = "sqlite:///artifactd.db"
"""The embedded SQLite file, relative to the working directory: next to the default ./mlruns."""

ARTIFACTS_DESTINATION_VARIABLE = "ARTIFACTD_ARTIFACTS_DESTINATION"
BACKEND_STORE_VARIABLE = "ARTIFACTD_BACKEND_STORE_URI"
EXTRA_ROOTS_VARIABLE = "ARTIFACTD_EXTRA_ARTIFACT_ROOTS"

# The client's settings (read by artifactd.client.settings)
TRANSFER_TIMEOUT_VARIABLE = "MLFLOW_ARTIFACT_UPLOAD_DOWNLOAD_TIMEOUT"
RPC_TIMEOUT_VARIABLE = "ARTIFACTD_RPC_TIMEOUT"
RETRIES_VARIABLE = "ARTIFACTD_MAX_RETRIES"
CHUNK_SIZE_VARIABLE = "ARTIFACTD_CHUNK_SIZE"
SERVER_VARIABLE = "ARTIFACTD_SERVER"
TLS_VARIABLE = "ARTIFACTD_TLS"
TLS_CA_VARIABLE = "ARTIFACTD_TLS_CA"
CLIENT_CERT_VARIABLE = "ARTIFACTD_CLIENT_CERT"
CLIENT_KEY_VARIABLE = "ARTIFACTD_CLIENT_KEY"
TOKEN_VARIABLE = "ARTIFACTD_TOKEN"  # noqa: S105 - a variable name, not a secret
TOKEN_FILE_VARIABLE = "ARTIFACTD_TOKEN_FILE"  # noqa: S105
DIRECT_IO_VARIABLE = "ARTIFACTD_DIRECT_IO"
