"""Direct transfers (SAS URLs) of the Azure Blob adapter, against a real Azurite server.

The presigned requests are made with `requests`, as a client would: straight to Azurite, with the
URL, method and headers the adapter returned.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import types
import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.storage.blob import ContainerClient

from artifactd.protocol.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from artifactd.protocol.paths import ROOT, ArtifactPath, parse
from artifactd_server.storage.azure import BLOCK_SIZE, AzureBlobStorage
from artifactd_server.storage.base import DirectTransfers, PresignedRequest, StoredPart

from backend_servers import AZURE_ACCOUNT, AZURE_KEY, AZURE_PREFIX, BUCKET, azure_server_env

KiB = 1024
TTL = 300.0


@pytest.fixture
def storage(azurite_connection: str, prefix: str) -> Iterator[AzureBlobStorage]:
    destination = (
        f"wasbs://{BUCKET}@{AZURE_ACCOUNT}.blob.core.windows.net/{AZURE_PREFIX}/direct-{prefix}"
    )
    store = AzureBlobStorage(destination, environ=azure_server_env(azurite_connection))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def container(azurite_connection: str) -> Iterator[ContainerClient]:
    """A plain client, to look at what Azurite holds behind the adapter's back."""
    with ContainerClient.from_connection_string(azurite_connection, BUCKET) as client:
        yield client


def send(request: PresignedRequest, data: bytes | None = None) -> requests.Response:
    return requests.request(
        request.method, request.url, headers=request.headers, data=data, timeout=30
    )


def block_id_of(request: PresignedRequest) -> str:
    """What a client reports as a part's ETag on Azure: the URL's `blockid`, URL-decoded."""
    return parse_qs(urlsplit(request.url).query)["blockid"][0]


def put_parts(
    storage: AzureBlobStorage, path: ArtifactPath, upload_id: str, pieces: dict[int, bytes]
) -> dict[int, str]:
    """PUTs each numbered piece through its presigned URL; returns the block ids by number."""
    ids = {}
    for number, data in pieces.items():
        request = storage.presign_part(path, upload_id, number, len(data), TTL)
        reply = send(request, data)
        assert reply.status_code == 201, reply.text
        ids[number] = block_id_of(request)
    return ids


def write_file(storage: AzureBlobStorage, path: ArtifactPath, data: bytes) -> str:
    """A file written the streamed way (through the server); returns its sha256."""
    digest = hashlib.sha256(data).hexdigest()
    with storage.start_upload(path) as upload:
        upload.write(data)
        upload.commit(digest, overwrite=True)
    return digest


def uncommitted_names(container: ContainerClient, storage: AzureBlobStorage) -> list[str]:
    """Blob names below the storage's root, including blobs that only have staged blocks."""
    return [
        str(b.name)
        for b in container.list_blobs(
            name_starts_with=storage.dir_prefix(ROOT), include=["uncommittedblobs"]
        )
    ]


def test_capabilities_with_an_account_key(storage: AzureBlobStorage) -> None:
    assert isinstance(storage, DirectTransfers)
    assert storage.direct_upload_refusal() is None
    assert storage.capabilities.multipart_upload
    assert storage.capabilities.presigned_urls
    assert storage.capabilities.range_reads


def test_round_trip(storage: AzureBlobStorage) -> None:
    path = parse("models/weights.bin")
    pieces = {1: os.urandom(256 * KiB), 2: os.urandom(256 * KiB), 3: os.urandom(100 * KiB)}
    data = pieces[1] + pieces[2] + pieces[3]
    digest = hashlib.sha256(data).hexdigest()

    upload_id = storage.create_multipart(path, size=len(data), sha256=digest)
    before = time.time()
    request = storage.presign_part(path, upload_id, 1, len(pieces[1]), TTL)
    assert request.method == "PUT"
    assert before + TTL - 2 <= request.expires_at <= time.time() + TTL + 1
    ids = put_parts(storage, path, upload_id, pieces)
    assert len(set(ids.values())) == 3

    with pytest.raises(NotFound):  # staged blocks are invisible
        storage.stat(path)
    parts = storage.list_parts(path, upload_id)
    assert parts == [StoredPart(n, ids[n], len(pieces[n])) for n in (1, 2, 3)]

    entry = storage.complete_multipart(
        path, upload_id, parts, size=len(data), sha256=digest, overwrite=False
    )
    assert (entry.path, entry.is_dir, entry.size, entry.sha256) == (path, False, len(data), digest)
    stat = storage.stat(path)
    assert (stat.size, stat.sha256) == (len(data), digest)
    assert storage.list_parts(path, upload_id) == []  # committed: no longer uncommitted blocks

    entry, download = storage.presign_download(path, TTL)
    assert (entry.size, entry.sha256) == (len(data), digest)
    assert download.method == "GET"
    assert set(download.headers) == {"If-Match"}
    reply = send(download)
    assert reply.status_code == 200, reply.text
    assert reply.content == data
    with storage.open_file(path) as reader:  # the streamed read sees the same bytes
        assert b"".join(reader.chunks(0, 0, 64 * KiB)) == data


def test_complete_without_digest_leaves_none(storage: AzureBlobStorage) -> None:
    path = parse("no-digest.txt")
    write_file(storage, path, b"old contents")  # its sha256 must not survive the overwrite
    upload_id = storage.create_multipart(path, size=5, sha256=None)
    put_parts(storage, path, upload_id, {1: b"fresh"})
    parts = storage.list_parts(path, upload_id)
    entry = storage.complete_multipart(path, upload_id, parts, size=5, sha256=None, overwrite=True)
    assert entry.size == 5
    assert entry.sha256 is None
    assert storage.stat(path).sha256 is None


def test_list_parts_shows_what_was_put(storage: AzureBlobStorage) -> None:
    path = parse("partial.bin")
    upload_id = storage.create_multipart(path, size=30, sha256=None)
    other_id = storage.create_multipart(path, size=30, sha256=None)
    assert upload_id != other_id
    assert storage.list_parts(path, upload_id) == []  # nothing put yet: no parts, no error

    ids = put_parts(storage, path, upload_id, {2: b"b" * 10, 1: b"a" * 7})
    other = put_parts(storage, path, other_id, {1: b"x" * 3})
    assert storage.list_parts(path, upload_id) == [
        StoredPart(1, ids[1], 7),
        StoredPart(2, ids[2], 10),
    ]
    assert storage.list_parts(path, other_id) == [StoredPart(1, other[1], 3)]

    put_parts(storage, path, upload_id, {1: b"A" * 10})  # a part put again replaces its block
    assert storage.list_parts(path, upload_id)[0] == StoredPart(1, ids[1], 10)


def test_complete_refuses_a_foreign_block_id(storage: AzureBlobStorage) -> None:
    path = parse("foreign.bin")
    upload_id = storage.create_multipart(path, size=4, sha256=None)
    other_id = storage.create_multipart(path, size=4, sha256=None)
    put_parts(storage, path, upload_id, {1: b"mine"})
    other = put_parts(storage, path, other_id, {1: b"them"})
    with pytest.raises(FailedPrecondition):
        storage.complete_multipart(
            path, upload_id, [StoredPart(1, other[1], 4)], size=4, sha256=None, overwrite=False
        )
    with pytest.raises(NotFound):
        storage.stat(path)


def test_complete_fails_if_exists(storage: AzureBlobStorage, container: ContainerClient) -> None:
    path = parse("taken.txt")
    old = b"the file that was there first"
    old_digest = write_file(storage, path, old)
    etag = container.get_blob_client(storage.key(path)).get_blob_properties().etag

    new = b"a direct upload that must not replace it"
    new_digest = hashlib.sha256(new).hexdigest()
    upload_id = storage.create_multipart(path, size=len(new), sha256=new_digest)
    put_parts(storage, path, upload_id, {1: new[:10], 2: new[10:]})
    parts = storage.list_parts(path, upload_id)
    with pytest.raises(AlreadyExists):
        storage.complete_multipart(
            path, upload_id, parts, size=len(new), sha256=new_digest, overwrite=False
        )
    props = container.get_blob_client(storage.key(path)).get_blob_properties()
    assert props.etag == etag
    assert storage.stat(path).sha256 == old_digest
    with storage.open_file(path) as reader:
        assert b"".join(reader.chunks(0, 0, KiB)) == old

    # The failed commit kept the blocks: the same upload may still replace the file on purpose.
    entry = storage.complete_multipart(
        path, upload_id, parts, size=len(new), sha256=new_digest, overwrite=True
    )
    assert (entry.size, entry.sha256) == (len(new), new_digest)
    with storage.open_file(path) as reader:
        assert b"".join(reader.chunks(0, 0, KiB)) == new


def test_expired_sas_is_refused(storage: AzureBlobStorage) -> None:
    path = parse("late.bin")
    write_file(storage, path, b"readable for a second")
    upload_id = storage.create_multipart(path, size=4, sha256=None)
    part = storage.presign_part(path, upload_id, 1, 4, 1.0)
    _, download = storage.presign_download(path, 1.0)
    assert part.expires_at <= time.time() + 1
    while time.time() < max(part.expires_at, download.expires_at) + 1.5:
        time.sleep(0.25)
    reply = send(part, b"late")
    assert reply.status_code == 403, reply.text
    assert send(download).status_code == 403
    assert storage.list_parts(path, upload_id) == []


def _forge(url: str) -> str:
    """The URL with one character of its signature changed."""
    start = url.index("sig=") + len("sig=")
    swapped = "B" if url[start] == "A" else "A"
    return url[:start] + swapped + url[start + 1 :]


def test_forged_sas_is_refused(storage: AzureBlobStorage) -> None:
    path = parse("forged.bin")
    write_file(storage, path, b"someone else's file")
    upload_id = storage.create_multipart(path, size=4, sha256=None)
    part = storage.presign_part(path, upload_id, 1, 4, TTL)
    forged = PresignedRequest(_forge(part.url), part.method, part.headers, part.expires_at)
    assert forged.url != part.url
    assert send(forged, b"evil").status_code == 403
    assert storage.list_parts(path, upload_id) == []

    _, download = storage.presign_download(path, TTL)
    forged = PresignedRequest(
        _forge(download.url), download.method, download.headers, download.expires_at
    )
    assert send(forged).status_code == 403
    assert send(download).status_code == 200  # the genuine one works

    # A download URL (read permission) cannot stage a block.
    as_put = part.url.split("?", 1)[1].split("&comp=", 1)[1]
    wrong = PresignedRequest(f"{download.url}&comp={as_put}", "PUT", {}, download.expires_at)
    assert send(wrong, b"evil").status_code == 403
    assert storage.list_parts(path, upload_id) == []


def test_abort_leaves_nothing(storage: AzureBlobStorage, container: ContainerClient) -> None:
    path = parse("aborted/file.bin")
    upload_id = storage.create_multipart(path, size=20, sha256=None)
    put_parts(storage, path, upload_id, {1: b"a" * 10, 2: b"b" * 10})
    assert storage.key(path) in uncommitted_names(container, storage)

    storage.abort_multipart(path, upload_id)
    assert storage.list_parts(path, upload_id) == []
    assert uncommitted_names(container, storage) == []
    with pytest.raises(NotFound):
        storage.stat(path)
    with pytest.raises(NotFound):
        storage.stat(parse("aborted"))
    storage.abort_multipart(path, upload_id)  # already gone: no error
    storage.abort_multipart(path, "not-an-upload-id")


def test_abort_never_touches_a_committed_blob(
    storage: AzureBlobStorage, container: ContainerClient
) -> None:
    path = parse("kept.txt")
    digest = write_file(storage, path, b"committed contents")
    blob = container.get_blob_client(storage.key(path))
    etag = blob.get_blob_properties().etag
    upload_id = storage.create_multipart(path, size=3, sha256=None)
    put_parts(storage, path, upload_id, {1: b"new"})

    storage.abort_multipart(path, upload_id)
    assert blob.get_blob_properties().etag == etag
    assert storage.stat(path).sha256 == digest
    assert blob.download_blob().readall() == b"committed contents"


def test_abort_keeps_another_uploads_blocks(storage: AzureBlobStorage) -> None:
    path = parse("shared.bin")
    mine = storage.create_multipart(path, size=4, sha256=None)
    theirs = storage.create_multipart(path, size=4, sha256=None)
    put_parts(storage, path, mine, {1: b"mine"})
    put_parts(storage, path, theirs, {1: b"them"})

    storage.abort_multipart(path, mine)
    assert [p.number for p in storage.list_parts(path, theirs)] == [1]
    parts = storage.list_parts(path, theirs)
    entry = storage.complete_multipart(path, theirs, parts, size=4, sha256=None, overwrite=False)
    assert entry.size == 4
    assert storage.list_parts(path, mine) == []  # the commit discarded the aborted blocks


def test_direct_and_streamed_uploads_share_a_blob(storage: AzureBlobStorage) -> None:
    """Block ids of both kinds have one length, which Azure requires of a blob's blocks."""
    path = parse("both.bin")
    streamed = storage.start_upload(path)
    data = os.urandom(BLOCK_SIZE + 10)
    streamed.write(data)  # stages one block now
    upload_id = storage.create_multipart(path, size=5, sha256=None)
    put_parts(storage, path, upload_id, {1: b"parts"})
    assert [p.size for p in storage.list_parts(path, upload_id)] == [5]
    streamed.commit(hashlib.sha256(data).hexdigest(), overwrite=False)
    assert storage.stat(path).size == len(data)


def test_presigned_get_fails_after_overwrite(storage: AzureBlobStorage) -> None:
    path = parse("replaced.txt")
    write_file(storage, path, b"version one")
    entry, download = storage.presign_download(path, TTL)
    assert entry.size == len(b"version one")
    assert send(download).content == b"version one"
    write_file(storage, path, b"version two, longer")
    reply = send(download)
    assert reply.status_code == 412, reply.text


def test_presign_download_of_missing_or_directory(storage: AzureBlobStorage) -> None:
    write_file(storage, parse("dir/inner.txt"), b"x")
    with pytest.raises(NotFound):
        storage.presign_download(parse("missing.txt"), TTL)
    with pytest.raises(FailedPrecondition):
        storage.presign_download(parse("dir"), TTL)


def test_create_multipart_refuses_a_directory(storage: AzureBlobStorage) -> None:
    write_file(storage, parse("folder/inner.txt"), b"x")
    with pytest.raises(FailedPrecondition):
        storage.create_multipart(parse("folder"), size=1, sha256=None)
    with pytest.raises(FailedPrecondition):
        storage.create_multipart(parse("folder/inner.txt/below"), size=1, sha256=None)


# -- configurations without an account key (nothing is contacted) -------------------------

UNREACHABLE = "wasbs://artifacts@someaccount.blob.core.windows.net/root"


def test_default_azure_credential_refuses_direct_transfers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class DefaultAzureCredential:
        def get_token(self, *scopes: str, **kwargs: object) -> object:
            raise AssertionError("nothing may be contacted")

    identity = types.ModuleType("azure.identity")
    identity.DefaultAzureCredential = DefaultAzureCredential  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "azure.identity", identity)
    store = AzureBlobStorage(
        UNREACHABLE,
        environ={"AZURE_STORAGE_CONNECTION_STRING": "", "AZURE_STORAGE_ACCESS_KEY": ""},
    )
    try:
        refusal = store.direct_upload_refusal()
        assert refusal is not None
        assert "user-delegation" in refusal
        assert "DefaultAzureCredential" in refusal
        assert not store.capabilities.multipart_upload
        assert not store.capabilities.presigned_urls
        assert store.capabilities.range_reads
        with pytest.raises(FailedPrecondition):
            store.create_multipart(parse("a.bin"), size=1, sha256=None)
        with pytest.raises(FailedPrecondition):
            store.presign_part(parse("a.bin"), uuid.uuid4().hex, 1, 1, TTL)
    finally:
        store.close()


def test_sas_connection_string_refuses_direct_transfers() -> None:
    connection = (
        f"BlobEndpoint=https://{AZURE_ACCOUNT}.blob.core.windows.net;"
        "SharedAccessSignature=sv=2024-08-04&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&sig=x"
    )
    store = AzureBlobStorage(
        f"wasbs://artifacts@{AZURE_ACCOUNT}.blob.core.windows.net/root",
        environ={"AZURE_STORAGE_CONNECTION_STRING": connection},
    )
    try:
        assert store.direct_upload_refusal() is not None
        assert not store.capabilities.multipart_upload
        assert not store.capabilities.presigned_urls
    finally:
        store.close()


def test_access_key_signs_https_urls() -> None:
    store = AzureBlobStorage(UNREACHABLE, environ={"AZURE_STORAGE_ACCESS_KEY": AZURE_KEY})
    try:
        assert store.direct_upload_refusal() is None
        assert store.capabilities.multipart_upload
        assert store.capabilities.presigned_urls
        upload_id = uuid.uuid4().hex
        request = store.presign_part(parse("a b.bin"), upload_id, 7, 1, TTL)  # signs offline
        parts = urlsplit(request.url)
        query = parse_qs(parts.query)
        assert (parts.scheme, parts.netloc) == ("https", "someaccount.blob.core.windows.net")
        assert parts.path == "/artifacts/root/a%20b.bin"
        assert query["comp"] == ["block"]
        assert query["sp"] == ["w"]
        assert query["spr"] == ["https"]
        assert "sig" in query
        assert len(query["blockid"][0]) == len(
            block_id_of(store.presign_part(parse("a b.bin"), upload_id, 50_000, 1, TTL))
        )
        with pytest.raises(InvalidArgument, match="part numbers"):
            store.presign_part(parse("a b.bin"), upload_id, 50_001, 1, TTL)
    finally:
        store.close()
