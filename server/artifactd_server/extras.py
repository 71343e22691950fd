"""The optional dependencies of `artifactd-server`, and the one-line error when one is missing.

Each network backend and each database other than SQLite needs a library the base install leaves
out (see the extras in server/pyproject.toml). Starting with such a destination or backend store
without its extra must not end in an ImportError traceback: the operator gets one line naming
what to install. This module imports nothing of the server, so every layer may use it.
"""

from __future__ import annotations

from typing import NoReturn

from artifactd.protocol.errors import FailedPrecondition

DISTRIBUTION = "artifactd-server"

# The top-level module each extra provides, for telling "the extra is missing" from a bug.
MODULES = {
    "s3": ("boto3", "botocore", "s3transfer"),
    "gcs": ("google",),
    "azure": ("azure",),
    "sftp": ("paramiko",),
    "hdfs": ("pyarrow",),
    "postgres": ("psycopg", "psycopg_binary"),
    "mysql": ("pymysql",),
}


def install_line(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def raise_missing_extra(what: str, extra: str | None, error: ImportError) -> NoReturn:
    """Raises the one-line error naming `extra` when `what` failed to import one of that
    extra's modules; re-raises `error` itself otherwise (a real bug, or no extra applies)."""
    missing = (error.name or "").split(".")[0]
    if extra is None or missing not in MODULES.get(extra, ()):
        raise error
    raise FailedPrecondition(
        f"{what} needs the {extra!r} extra, which is not installed (no module {missing!r}): "
        f"{install_line(extra)}"
    ) from None
