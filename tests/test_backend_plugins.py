"""Third-party backends through the `artifactd.backends` entry-point group.

The plugin "package" is a real `.dist-info` on the import path (what pip installs), found by
importlib.metadata exactly as an installed distribution would be. That a plugin serves every RPC
through a real server is shown by the conformance suite's `hdfs-pyarrow` backend.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from artifactd.protocol.errors import FailedPrecondition, InvalidArgument
from artifactd_server.storage import open_storage
from artifactd_server.storage.hdfs import HDFSStorage

from backend_servers import plugin_path

Installer = Callable[[dict[str, str]], None]


@pytest.fixture
def install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Installer]:
    """Installs entry points (scheme -> "module:factory") for this test only."""

    def installer(backends: dict[str, str]) -> None:
        for entry in reversed(plugin_path(tmp_path / "site", backends).split(":")):
            monkeypatch.syspath_prepend(entry)

    yield installer
    sys.modules.pop("artifactd_hdfs_standin", None)


def test_a_plugin_scheme_opens_its_storage(install: Installer, tmp_path: Path) -> None:
    install({"hdfs-standin": "artifactd_hdfs_standin:open_standin"})
    storage = open_storage(f"hdfs-standin://{tmp_path}/root")
    assert (storage.name, storage.uri) == ("hdfs-pyarrow", f"hdfs-standin://{tmp_path}/root")
    assert (tmp_path / "root").is_dir()
    storage.close()


def test_unknown_scheme_lists_what_is_supported_and_installed(install: Installer) -> None:
    install({"hdfs-standin": "artifactd_hdfs_standin:open_standin"})
    with pytest.raises(InvalidArgument) as info:
        open_storage("nosuch://bucket/prefix")
    message = info.value.message
    assert "unsupported artifacts destination scheme 'nosuch'" in message
    assert "s3://bucket/prefix" in message and "hdfs://namenode:port/path" in message
    assert "installed plugins add: hdfs-standin" in message


def test_a_plugin_that_fails_to_import_names_its_package(install: Installer) -> None:
    install({"brokenfs": "no_such_module_anywhere:open"})
    with pytest.raises(FailedPrecondition) as info:
        open_storage("brokenfs://x/y")
    assert info.value.message.startswith(
        "the brokenfs:// backend of package 'artifactd-test-plugins' "
        "(no_such_module_anywhere:open) failed to load: No module named"
    )


def test_a_plugin_must_return_a_storage(install: Installer) -> None:
    install({"oddfs": "artifactd_hdfs_standin:not_a_factory"})
    with pytest.raises(FailedPrecondition, match="returned str, not an artifactd Storage"):
        open_storage("oddfs://x/y")
    install({"oddfs2": "artifactd_hdfs_standin:SCHEME"})
    with pytest.raises(FailedPrecondition, match="is not callable"):
        open_storage("oddfs2://x/y")
    install({"oddfs3": "artifactd_hdfs_standin:crashing"})
    with pytest.raises(FailedPrecondition) as info:
        open_storage("oddfs3://x/y")
    assert info.value.message == (
        "the oddfs3:// backend of package 'artifactd-test-plugins' failed: "
        "RuntimeError: cannot reach oddfs3://x/y"
    )


def test_a_plugin_cannot_replace_a_built_in_scheme(
    install: Installer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    install({"hdfs": "artifactd_hdfs_standin:open_standin"})
    monkeypatch.setattr(pafs, "HadoopFileSystem", lambda **_: pafs.LocalFileSystem())
    with caplog.at_level(logging.WARNING):
        storage = open_storage(f"hdfs://nn{tmp_path}/root")
    assert type(storage) is HDFSStorage
    assert "ignoring the artifactd.backends backend 'artifactd_hdfs_standin:open_standin'" in (
        caplog.text
    )
    storage.close()
