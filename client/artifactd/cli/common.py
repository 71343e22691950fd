"""What the `artifactd` commands share: the --server option, one-line errors, formatting.

User mistakes (a missing file, a bad path, an unreachable server) end with a one-line message
and exit code 1, never a traceback; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import click

from artifactd.protocol.environment import SERVER
from artifactd.protocol.errors import ArtifactError

F = TypeVar("F", bound=Callable[..., Any])


def server_option(command: F) -> F:
    return click.option(
        "--server",
        envvar=SERVER.name,
        default=SERVER.default,
        show_default=True,
        help=f"artifactd server HOST:PORT, or replicas: ADDR:PORT,ADDR:PORT or a gRPC target "
        f"URI such as dns:///NAME:PORT (env {SERVER.name}).",
    )(command)


def json_option(command: F) -> F:
    return click.option(
        "--json", "as_json", is_flag=True, help="JSON output, one object per line."
    )(command)


def fail(message: str) -> NoReturn:
    click.echo(f"artifactd: error: {message}", err=True)
    sys.exit(1)


def friendly_errors(command: F) -> F:
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ArtifactError as exc:
            fail(exc.message)
        except BrokenPipeError:
            # The reader of our output left (`| head`): stop quietly, as Unix tools do, and keep
            # Python from reporting the same error again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(141)  # 128 + SIGPIPE, what a shell reports for a tool killed by it
        except OSError as exc:
            fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        except KeyboardInterrupt:
            click.echo("artifactd: interrupted; nothing partial was kept", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def timestamp(ms: int | None) -> str:
    """Milliseconds since the epoch as ISO 8601 UTC to the second; `-` when unset."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            str(cell) if i == len(header) - 1 else str(cell).ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)
