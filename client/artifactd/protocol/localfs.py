"""Creating directories below a root without ever following a symlink out of it.

`os.makedirs(root/a/b/c)` follows a symlink at `a` wherever it points, creating directories
outside the root before any check after the fact could object. Used by the server's local
storage (the artifact root) and by the client (the download destination) alike.
"""

from __future__ import annotations

import os

from artifactd.protocol.errors import FailedPrecondition, PermissionDenied


def inside(root_real: str, real: str) -> bool:
    """Whether the resolved path `real` is `root_real` or below it."""
    return real == root_real or real.startswith(root_real + os.sep)


def make_dirs_inside(root_real: str, parts: tuple[str, ...]) -> tuple[str, list[str]]:
    """Creates `root_real/parts...` as needed; returns its real path and the directories made.

    Each existing component is resolved and checked before anything is created below it, so a
    symlink leading out of the root raises `PermissionDenied` with nothing created outside.
    On failure, the directories this call made are removed again.
    """
    current = root_real
    created: list[str] = []
    try:
        for index, part in enumerate(parts):
            candidate = os.path.join(current, part)
            try:
                os.mkdir(candidate, 0o755)
                created.append(candidate)
                current = candidate
                continue
            except FileExistsError:
                pass
            real = os.path.realpath(candidate)
            shown = "/".join(parts[: index + 1])
            if not inside(root_real, real):
                raise PermissionDenied(f"'{shown}' is a symlink leading outside {root_real!r}")
            if not os.path.isdir(real):
                raise FailedPrecondition(f"'{shown}' is a file, not a directory")
            current = real
    except BaseException:
        remove_empty_dirs(created)
        raise
    return current, created


def remove_empty_dirs(created: list[str]) -> None:
    """Undoes directories made for an operation that failed, deepest first, if still empty."""
    for directory in reversed(created):
        try:
            os.rmdir(directory)
        except OSError:
            return
