"""Run ids, checked the same way by the client, the CLI and the server."""

from __future__ import annotations

import re

from artifactd.protocol.errors import InvalidArgument

_RUN_ID = re.compile(r"[0-9a-f]{32}")


def is_run_id(text: str) -> bool:
    """Whether `text` is a run id: exactly 32 lower-case hex characters (`uuid4().hex`)."""
    return isinstance(text, str) and _RUN_ID.fullmatch(text) is not None


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a run id, else `InvalidArgument`."""
    if not is_run_id(run_id):
        raise InvalidArgument(
            f"run id {run_id!r} is not a run id: run ids are 32 lower-case hex characters "
            "(as `artifactd runs create` prints them)",
            field="run_id",
        )
    return run_id
