"""The wheel ships every package: pyproject lists them by hand (one namespace, two source trees)."""

from __future__ import annotations

import tomllib
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent


def test_every_source_package_is_listed_in_pyproject() -> None:
    config = tomllib.loads((TOP / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for package, directory in config["package-dir"].items():
        base = TOP / directory
        for source in base.rglob("*.py"):
            relative = source.parent.relative_to(base).parts
            found.add(".".join((package, *relative)))
    assert found <= listed, f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed <= found, f"listed but missing: {sorted(listed - found)}"
