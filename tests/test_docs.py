"""The configuration reference against the code: current, complete, and the only definition.

docs/reference/configuration.md is generated from the settings tables
(`artifactd_server.settings`, `artifactd.protocol.environment`); these tests fail when the page
is stale, when an option `--help` shows is missing from it, or when the code reads an
environment variable that no table defines (and so no page documents).
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from artifactd.protocol.environment import CLIENT_VARIABLES
from artifactd_server.settings import SERVE_OPTIONS, SERVER_VARIABLES

from servers import run_cli

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "reference" / "configuration.md"
VARIABLE_NAME = re.compile(r"^_?(ARTIFACTD|MLFLOW|AWS|AZURE|GOOGLE|STORAGE)_[A-Z0-9_]+$")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _generator() -> ModuleType:
    """scripts/gen_config_docs.py, imported as scripts/test.sh runs it (its folder on the path)."""
    scripts = str(ROOT / "scripts")
    sys.path.insert(0, scripts)
    try:
        return importlib.import_module("gen_config_docs")
    finally:
        sys.path.remove(scripts)


def test_the_page_is_current() -> None:
    assert PAGE.read_text(encoding="utf-8") == _generator().render(), (
        "docs/reference/configuration.md is stale: run .venv/bin/python scripts/gen_config_docs.py"
    )


@pytest.mark.parametrize(
    "command",
    [("serve", "--help"), ("db", "upgrade", "--help"), ("--help",)],
    ids=["serve", "db-upgrade", "root"],
)
def test_every_option_of_help_is_documented(command: tuple[str, ...]) -> None:
    """What a user sees in `--help` (run as a user runs it) has a row in the reference."""
    shown = run_cli(*command)
    assert shown.returncode == 0, shown.stderr
    section = shown.stdout.split("Options:", 1)[1].split("Commands:")[0]
    # the option column only: a line that starts with an option, up to the gap before its help
    declared = [line.strip().split("  ")[0] for line in section.splitlines()]
    options = {o for d in declared if d.startswith("-") for o in OPTION.findall(d)}
    options -= {"--help", "--version"}
    assert options, shown.stdout
    page = PAGE.read_text(encoding="utf-8")
    missing = sorted(option for option in options if f"`{option}`" not in page)
    assert not missing, f"not in {PAGE.name}: {missing}"


def test_every_serve_option_and_variable_has_a_row() -> None:
    page = PAGE.read_text(encoding="utf-8")
    names = [o.variable for o in SERVE_OPTIONS] + [v.name for v in SERVER_VARIABLES]
    names += [v.name for v in CLIENT_VARIABLES]
    assert [name for name in names if f"`{name}`" not in page] == []


def _string_constants(tree: Path) -> dict[str, str]:
    """Every string constant shaped like an environment variable name, with where it is."""
    found: dict[str, str] = {}
    for path in sorted(tree.rglob("*.py")):
        if "v1" in path.relative_to(tree).parts:
            continue  # generated stubs
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_text and VARIABLE_NAME.match(node.value):
                found.setdefault(node.value, f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.parametrize("tree", ["client/artifactd", "server/artifactd_server"])
def test_no_variable_is_read_outside_the_tables(tree: str) -> None:
    """A variable name written in the code must be one a table defines: a variable read ad
    hoc would be missing from the reference. (The client may only use the client's table.)"""
    defined = {v.name for v in CLIENT_VARIABLES}
    if tree.startswith("server"):
        defined |= {v.name for v in SERVER_VARIABLES} | {o.variable for o in SERVE_OPTIONS}
    stray = {
        name: where for name, where in _string_constants(ROOT / tree).items() if name not in defined
    }
    assert not stray, f"environment variables outside the settings tables: {stray}"


def test_names_are_unique_per_table() -> None:
    for names in (
        [v.name for v in CLIENT_VARIABLES],
        [v.name for v in SERVER_VARIABLES],
        [o.variable for o in SERVE_OPTIONS],
        [o.flag for o in SERVE_OPTIONS],
    ):
        assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
