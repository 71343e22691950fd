"""What an upload to FTP, SFTP or Azure Blob leaves in storage is recorded, so a sweeper can
remove it when the upload could not (storage unreachable at its abort, or its server killed).

In one process, on the real servers (pyftpdlib, sshd, Azurite): an upload past one 8 MiB part
reports a cleanup handle before storing past it (none below: small files cost no record),
reports None once nothing is left (published, or removed by its abort), and
`Storage.discard_leftover(path, handle)` removes what an upload left without aborting, as the
sweeper does for a dead stream (`domain.streamed`). tests/test_storage_outages.py shows the whole
path through a server; this pins each adapter's part of it.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifactd.protocol.paths import parse
from artifactd_server.storage import open_storage
from artifactd_server.storage.base import Storage

from backend_servers import BUCKET, FTP_PASSWORD, FTP_USER, HOST, azure_server_env

MiB = 1024 * 1024
PART = 8 * MiB


class Remote:
    """One adapter and a way to see what it left behind its back."""

    def __init__(self, storage: Storage, leftovers: Any) -> None:
        self.storage = storage
        self.leftovers = leftovers


@pytest.fixture(params=["ftp", "sftp", "azure"])
def remote(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Remote]:
    name = f"cleanup-{uuid.uuid4().hex[:8]}"
    if request.param == "ftp":
        port, home = request.getfixturevalue("ftp_server")
        storage = open_storage(f"ftp://{FTP_USER}:{FTP_PASSWORD}@{HOST}:{port}/{name}")
        root: Path = home / name
        yield Remote(storage, lambda: sorted(p.name for p in root.rglob(".artifactd-upload-*")))
    elif request.param == "sftp":
        port, sftp_root, keys = request.getfixturevalue("sftp_server")
        for variable, value in {
            "ARTIFACTD_SFTP_IDENTITY_FILE": str(keys / "client_key"),
            "ARTIFACTD_SFTP_KNOWN_HOSTS": str(keys / "known_hosts"),
            "ARTIFACTD_SFTP_SSH_CONFIG": str(keys / "no-ssh-config"),
            "SSH_AUTH_SOCK": "",
        }.items():
            monkeypatch.setenv(variable, value)
        root = sftp_root / name
        storage = open_storage(f"sftp://root@{HOST}:{port}{root}")
        yield Remote(storage, lambda: sorted(p.name for p in root.rglob(".artifactd-upload-*")))
    else:
        from azure.storage.blob import ContainerClient

        connection: str = request.getfixturevalue("azurite_connection")
        for variable, value in azure_server_env(connection).items():
            monkeypatch.setenv(variable, value)
        storage = open_storage(
            f"wasbs://{BUCKET}@devstoreaccount1.blob.core.windows.net/{name}"
        )  # fmt: skip
        container = ContainerClient.from_connection_string(connection, BUCKET)

        def uncommitted() -> list[str]:
            blobs = container.list_blobs(name_starts_with=f"{name}/", include=["uncommittedblobs"])
            return [
                b.name
                for b in blobs
                if container.get_blob_client(b.name).get_block_list("uncommitted")[1]
            ]

        yield Remote(storage, uncommitted)
        container.close()
    storage.close()


def test_a_large_upload_is_recorded_until_published(remote: Remote) -> None:
    reports: list[str | None] = []
    data = os.urandom(PART + MiB)
    upload = remote.storage.start_upload(parse("d/big.bin"))
    upload.on_cleanup_handle(reports.append)
    upload.write(data[:PART])
    upload.write(data[PART:])
    assert len(reports) == 1 and reports[0], reports
    assert remote.leftovers(), "nothing in storage while the upload runs"
    upload.commit(hashlib.sha256(data).hexdigest(), overwrite=True)
    assert reports[1:] == [None]
    assert not remote.leftovers()


def test_a_small_upload_costs_no_record(remote: Remote) -> None:
    reports: list[str | None] = []
    data = os.urandom(MiB)
    upload = remote.storage.start_upload(parse("d/small.bin"))
    upload.on_cleanup_handle(reports.append)
    upload.write(data)
    upload.commit(hashlib.sha256(data).hexdigest(), overwrite=True)
    assert reports == []


def test_an_aborted_upload_is_forgotten(remote: Remote) -> None:
    reports: list[str | None] = []
    upload = remote.storage.start_upload(parse("d/aborted.bin"))
    upload.on_cleanup_handle(reports.append)
    upload.write(os.urandom(PART + MiB))
    upload.abort()
    assert len(reports) == 2 and reports[0] and reports[1] is None, reports
    assert not remote.leftovers()


def test_what_a_dead_upload_left_is_discarded_by_its_handle(remote: Remote) -> None:
    reports: list[str | None] = []
    path = parse("d/dead.bin")
    upload = remote.storage.start_upload(path)
    upload.on_cleanup_handle(reports.append)
    upload.write(os.urandom(PART + MiB))
    assert len(reports) == 1 and reports[0]
    handle = reports[0]
    # Its server "died": neither commit nor abort comes; a sweeper elsewhere has the handle.
    assert remote.leftovers()
    remote.storage.discard_leftover(path, handle)
    assert not remote.leftovers()
    remote.storage.discard_leftover(path, handle)  # gone already: no error
