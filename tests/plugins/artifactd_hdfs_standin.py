"""A third-party backend for the tests: HDFS's adapter on pyarrow's local filesystem.

Registered through the `artifactd.backends` entry-point group (see `backend_servers.
plugin_path`), as any third-party backend would be, under the scheme `hdfs-standin`:
`hdfs-standin:///absolute/dir` serves `/absolute/dir` through `ArrowStorage`, the code that
serves `hdfs://` minus the `HadoopFileSystem` itself, which cannot run on these machines.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import pyarrow.fs as pafs

from artifactd_server.storage.hdfs import ArrowStorage

SCHEME = "hdfs-standin"


class HDFSStandIn(ArrowStorage):
    name = "hdfs-pyarrow"


def open_standin(destination: str) -> HDFSStandIn:
    root = unquote(urlsplit(destination).path)
    return HDFSStandIn(pafs.LocalFileSystem(), root, f"{SCHEME}://{root}")


def not_a_factory(destination: str) -> str:
    """What a broken plugin returns instead of a Storage."""
    return "not a storage"


def crashing(destination: str) -> HDFSStandIn:
    """A plugin failing with an exception of its own."""
    raise RuntimeError(f"cannot reach {destination}")
