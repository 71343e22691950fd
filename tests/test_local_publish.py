"""Publishing a local upload where renameat2's RENAME_NOREPLACE is unavailable.

`_replace_file` first tries a rename that only creates a new name, and looks at a name already
there only when it exists. A C library without renameat2 (musl, glibc before 2.28) or a
filesystem refusing the flag (EINVAL) takes the fallback: a stat, then `os.replace`. It must
keep the same promises as the fast path: a file is replaced whole, a directory or a symlink to
one is refused and kept, and no temporary file stays. This machine's libc and ext4 always take
the fast path, so the fallback is reached by faking what those systems answer: the one fault
here that no real server can produce.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from artifactd.protocol.errors import ArtifactError
from artifactd.protocol.paths import parse
from artifactd_server.storage import libc
from artifactd_server.storage.local import LocalStorage

from conftest import stored_files

_real_function = libc.function


def _without_renameat2(name: str, *argtypes: Any) -> Any | None:
    """libc as musl or an old glibc has it: no renameat2; every other function as it is."""
    return None if name == "renameat2" else _real_function(name, *argtypes)


def _refusing_noreplace(name: str, *argtypes: Any) -> Any | None:
    """renameat2 on a filesystem that does not support RENAME_NOREPLACE: EINVAL, nothing done."""
    if name != "renameat2":
        return _real_function(name, *argtypes)

    def refuse(*_args: object) -> int:
        ctypes.set_errno(errno.EINVAL)
        return -1

    return refuse


@pytest.fixture(params=[_without_renameat2, _refusing_noreplace], ids=["no-renameat2", "EINVAL"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalStorage]:
    fake: Callable[..., Any] = request.param
    with mock.patch.object(libc, "function", side_effect=fake) as looked_up:
        local = LocalStorage(tmp_path / "root")
        yield local
        local.close()
    asked = [call.args[0] for call in looked_up.call_args_list]
    assert "renameat2" in asked, "no publish looked renameat2 up: the fallback was not reached"


def upload(storage: LocalStorage, name: str, data: bytes) -> None:
    """A small upload (below PRECHECKED_FROM: no directory check before its bytes), published
    with overwrite, as LogArtifact does."""
    pending = storage.start_upload(parse(name), size=len(data))
    pending.write(data)
    pending.commit(hashlib.sha256(data).hexdigest(), overwrite=True)


def test_the_fallback_publishes_and_replaces_a_file_whole(storage: LocalStorage) -> None:
    root = Path(storage.root)
    upload(storage, "d/model.bin", b"first version")
    assert (root / "d" / "model.bin").read_bytes() == b"first version"
    upload(storage, "d/model.bin", b"second")
    assert (root / "d" / "model.bin").read_bytes() == b"second"
    assert storage.stat(parse("d/model.bin")).sha256 == hashlib.sha256(b"second").hexdigest()
    assert stored_files(root) == ["d/model.bin"]


def test_the_fallback_refuses_a_directory_and_a_symlink_to_one(storage: LocalStorage) -> None:
    root = Path(storage.root)
    (root / "data").mkdir()
    (root / "data" / "kept.txt").write_bytes(b"kept")
    (root / "link").symlink_to(root / "data", target_is_directory=True)
    for name in ("data", "link"):
        with pytest.raises(ArtifactError, match="is a directory") as refused:
            upload(storage, name, b"a file where a directory is")
        assert refused.value.code.name == "FAILED_PRECONDITION"
    assert (root / "link").is_symlink()
    assert (root / "data" / "kept.txt").read_bytes() == b"kept"
    assert stored_files(root) == ["data/kept.txt"]
