"""Direct transfers on the GCS adapter (`DirectTransfers`), against the real gcp-storage-emulator.

The parts of a direct upload are hidden objects that the client PUTs with V4-signed URLs; the
adapter composes them at completion. These tests sign with a throwaway service-account key (made
here, never sent anywhere) named by ARTIFACTD_GCS_SIGNING_KEY_FILE, and make the PUTs and GETs as a
client would, over plain HTTP.

What the emulator cannot show: it checks neither signatures nor expiry times of signed URLs (any
`X-Goog-Signature` is accepted), ignores `generation=` on a GET and ignores preconditions
(`if_generation_match`). So these tests prove the URLs name the right objects, methods, generation
and lifetime, and that the adapter's own checks (its existence check before publishing) hold; the
signature being valid for real GCS rests on google-cloud-storage's V4 signer, and a pinned GET
failing after an overwrite on real GCS alone.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage as gcs

from artifactd.protocol.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from artifactd.protocol.paths import ArtifactPath, parse
from artifactd_server.storage import gcs as gcs_adapter
from artifactd_server.storage.base import DirectTransfers, PresignedRequest
from artifactd_server.storage.gcs import SIGNING_KEY_VARIABLE, GCSStorage

from backend_servers import BUCKET, gcs_server_env

UNIT = "direct"


@pytest.fixture
def gcs_env(gcs_endpoint: str, tmp_path: Path, signing_key: Path) -> dict[str, str]:
    return {**gcs_server_env(gcs_endpoint, tmp_path), SIGNING_KEY_VARIABLE: str(signing_key)}


@pytest.fixture
def storage(gcs_env: dict[str, str], prefix: str) -> Iterator[GCSStorage]:
    s = GCSStorage(f"gs://{BUCKET}/{UNIT}/{prefix}", environ=gcs_env)
    yield s
    s.close()


@pytest.fixture
def raw(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> gcs.Bucket:
    """The bucket as the emulator holds it, hidden objects included."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)  # conftest clears it per test
    return gcs.Client(project="artifactd", credentials=AnonymousCredentials()).bucket(BUCKET)


def names_below(raw: gcs.Bucket, prefix: str, directory: str = "") -> list[str]:
    """Object names under the test's root (relative to it)."""
    root = f"{UNIT}/{prefix}/"
    return sorted(b.name[len(root) :] for b in raw.list_blobs(prefix=root + directory))


def send(request: PresignedRequest, data: bytes | None = None) -> tuple[int, Any, bytes]:
    """Makes a presigned request as a client would: (status, headers, body)."""
    reply = requests.request(
        request.method, request.url, data=data, headers=request.headers, timeout=30
    )
    reply.raise_for_status()
    return reply.status_code, reply.headers, reply.content


def upload_parts(
    storage: GCSStorage, path: ArtifactPath, upload_id: str, parts: list[bytes]
) -> None:
    for number, data in enumerate(parts, 1):
        request = storage.presign_part(path, upload_id, number, len(data), 60)
        assert send(request, data)[0] == 200


def store(storage: GCSStorage, path: str, data: bytes) -> None:
    """A file written the ordinary (streamed) way."""
    with storage.start_upload(parse(path)) as upload:
        upload.write(data)
        upload.commit(hashlib.sha256(data).hexdigest(), overwrite=True)


def read(storage: GCSStorage, path: str) -> bytes:
    with storage.open_file(parse(path)) as reader:
        return b"".join(reader.chunks(0, 0, 1 << 20))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def test_is_direct_transfers_with_signing_key(storage: GCSStorage) -> None:
    assert isinstance(storage, DirectTransfers)
    assert storage.direct_upload_refusal() is None
    assert storage.capabilities.multipart_upload
    assert storage.capabilities.presigned_urls
    assert storage.capabilities.range_reads
    assert storage.part_limits.min_size == 1
    assert storage.part_limits.max_size == 5 * 1024**3
    assert storage.part_limits.max_parts == 10_000


def test_round_trip(storage: GCSStorage, raw: gcs.Bucket, prefix: str, gcs_endpoint: str) -> None:
    parts = [bytes([n]) * 100_000 for n in (1, 2)] + [b"tail" * 1000]  # the last one short
    data = b"".join(parts)
    digest = hashlib.sha256(data).hexdigest()
    path = parse("models/v1/weights.bin")
    upload_id = storage.create_multipart(path, size=len(data), sha256=digest)
    assert names_below(raw, prefix) == []  # creating an upload creates nothing

    for number, part in enumerate(parts, 1):
        request = storage.presign_part(path, upload_id, number, len(part), 60)
        assert request.method == "PUT"
        assert request.headers == {}  # nothing signed but the host: any client can send it
        assert request.url.startswith(f"{gcs_endpoint}/{BUCKET}/{UNIT}/{prefix}/models/v1/")
        assert send(request, part)[0] == 200
    assert names_below(raw, prefix) == [
        f"models/v1/.artifactd-upload-{upload_id}-{n:05d}" for n in (1, 2, 3)
    ]

    listed = storage.list_parts(path, upload_id)
    assert [(p.number, p.size, p.etag) for p in listed] == [
        (n, len(part), md5_hex(part)) for n, part in enumerate(parts, 1)
    ]
    entry = storage.complete_multipart(
        path, upload_id, listed, size=len(data), sha256=digest, overwrite=False
    )
    assert (entry.path, entry.is_dir, entry.size, entry.sha256) == (path, False, len(data), digest)
    assert entry.mtime_ns > 0
    assert names_below(raw, prefix) == ["models/v1/weights.bin"]  # the parts are gone

    stat = storage.stat(path)
    assert (stat.size, stat.sha256) == (len(data), digest)
    assert read(storage, "models/v1/weights.bin") == data

    described, download = storage.presign_download(path, 60)
    assert (described.size, described.sha256) == (len(data), digest)
    assert download.method == "GET"
    assert download.headers == {}
    status, _, body = send(download)
    assert status == 200
    assert body == data


def test_part_etag_is_what_a_client_can_know(storage: GCSStorage) -> None:
    """GCS's XML API answers a PUT with `ETag: "<hex md5>"`; the emulator sends no ETag, so a
    client computes the MD5 itself. Either way it is what `list_parts` reports."""
    path = parse("etag.bin")
    upload_id = storage.create_multipart(path, size=5, sha256=None)
    request = storage.presign_part(path, upload_id, 1, 5, 60)
    _, headers, _ = send(request, b"hello")
    (part,) = storage.list_parts(path, upload_id)
    assert part.etag == "5d41402abc4b2a76b9719d911017c592"
    sent = headers.get("ETag")
    assert sent is None or sent.strip('"') == part.etag


def test_parts_are_not_listed_before_completion(storage: GCSStorage) -> None:
    store(storage, "d/other.txt", b"other")
    path = parse("d/new.bin")
    upload_id = storage.create_multipart(path, size=6, sha256=None)
    upload_parts(storage, path, upload_id, [b"abc", b"def"])

    def listed() -> list[str]:
        return [str(e.path) for e in storage.iter_tree(parse("d"), recursive=True)]

    assert listed() == ["d/other.txt"]
    assert [str(e.path) for e in storage.iter_tree(parse("d"), recursive=False)] == ["d/other.txt"]
    with pytest.raises(NotFound):
        storage.stat(path)

    parts = storage.list_parts(path, upload_id)
    storage.complete_multipart(path, upload_id, parts, size=6, sha256=None, overwrite=False)
    assert listed() == ["d/new.bin", "d/other.txt"]
    assert storage.stat(path).sha256 is None  # none given, none recorded
    assert read(storage, "d/new.bin") == b"abcdef"


def test_complete_refuses_to_overwrite_an_existing_file(
    storage: GCSStorage, raw: gcs.Bucket, prefix: str
) -> None:
    """The emulator ignores `if_generation_match=0`: this is the adapter's own check."""
    store(storage, "taken.bin", b"the original")
    before = storage.stat(parse("taken.bin"))
    path = parse("taken.bin")
    new = b"a replacement"
    upload_id = storage.create_multipart(path, size=len(new), sha256=None)
    upload_parts(storage, path, upload_id, [new[:5], new[5:]])
    parts = storage.list_parts(path, upload_id)

    with pytest.raises(AlreadyExists):
        storage.complete_multipart(
            path, upload_id, parts, size=len(new), sha256=hashlib.sha256(new).hexdigest(),
            overwrite=False,
        )  # fmt: skip
    assert read(storage, "taken.bin") == b"the original"
    assert storage.stat(path) == before
    # the parts stay for the caller to abort (or to complete again); no scratch is left
    assert storage.list_parts(path, upload_id) == parts
    assert len(names_below(raw, prefix)) == 3

    entry = storage.complete_multipart(
        path, upload_id, parts, size=len(new), sha256=None, overwrite=True
    )
    assert entry.size == len(new)
    assert read(storage, "taken.bin") == new
    assert names_below(raw, prefix) == ["taken.bin"]


def test_list_parts(storage: GCSStorage) -> None:
    path = parse("p/file.bin")
    upload_id = storage.create_multipart(path, size=20, sha256=None)
    assert storage.list_parts(path, upload_id) == []
    other = storage.create_multipart(path, size=20, sha256=None)
    assert other != upload_id

    for number, data in ((3, b"33"), (1, b"1"), (2, b"two")):
        send(storage.presign_part(path, upload_id, number, len(data), 60), data)
    send(storage.presign_part(path, other, 1, 5, 60), b"other")
    send(storage.presign_part(path, upload_id, 1, 4, 60), b"ONE!")  # sent again: replaces

    parts = storage.list_parts(path, upload_id)
    assert [(p.number, p.size, p.etag) for p in parts] == [
        (1, 4, md5_hex(b"ONE!")),
        (2, 3, md5_hex(b"two")),
        (3, 2, md5_hex(b"33")),
    ]
    assert [(p.number, p.size) for p in storage.list_parts(path, other)] == [(1, 5)]
    # parts are named by directory and upload id (the id alone tells uploads apart)
    assert storage.list_parts(parse("p/file.bi"), upload_id) == parts
    assert storage.list_parts(parse("q/file.bin"), upload_id) == []
    with pytest.raises(NotFound):
        storage.list_parts(path, "not-an-upload-id/../x")


def test_abort_removes_the_parts(storage: GCSStorage, raw: gcs.Bucket, prefix: str) -> None:
    path = parse("a/file.bin")
    upload_id = storage.create_multipart(path, size=4, sha256=None)
    keep = storage.create_multipart(path, size=4, sha256=None)
    upload_parts(storage, path, upload_id, [b"ab", b"cd"])
    upload_parts(storage, path, keep, [b"xy"])
    assert len(names_below(raw, prefix)) == 3

    storage.abort_multipart(path, upload_id)
    assert storage.list_parts(path, upload_id) == []
    assert names_below(raw, prefix) == [f"a/.artifactd-upload-{keep}-00001"]
    storage.abort_multipart(path, upload_id)  # already gone: fine
    storage.abort_multipart(path, "garbage/..")  # never was: fine
    storage.abort_multipart(path, keep)
    assert names_below(raw, prefix) == []


def test_many_parts_are_composed_in_rounds(
    storage: GCSStorage, raw: gcs.Bucket, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GCS composes at most 32 sources (the emulator takes more, so the calls are counted):
    70 parts are composed as 32 + 32 + 6 into three scratch objects, then those three."""
    composed: list[int] = []
    compose = gcs.Blob.compose

    def counting(self: gcs.Blob, sources: list[gcs.Blob], **kwargs: Any) -> Any:
        composed.append(len(sources))
        return compose(self, sources, **kwargs)

    monkeypatch.setattr(gcs.Blob, "compose", counting)
    parts = [f"<{n}>".encode() for n in range(1, 71)]
    data = b"".join(parts)
    path = parse("many/file.bin")
    upload_id = storage.create_multipart(path, size=len(data), sha256=None)
    upload_parts(storage, path, upload_id, parts)
    listed = storage.list_parts(path, upload_id)
    assert [p.number for p in listed] == list(range(1, 71))

    digest = hashlib.sha256(data).hexdigest()
    entry = storage.complete_multipart(
        path, upload_id, listed, size=len(data), sha256=digest, overwrite=False
    )
    assert (entry.size, entry.sha256) == (len(data), digest)
    assert composed == [32, 32, 6, 3]
    assert read(storage, "many/file.bin") == data
    assert storage.stat(path).sha256 == digest
    assert names_below(raw, prefix) == ["many/file.bin"]  # parts and scratch objects gone


def test_complete_checks_the_size(storage: GCSStorage, raw: gcs.Bucket, prefix: str) -> None:
    """A part replaced after the server checked it (its URL still valid) changes the file: what
    was composed is removed instead of being served under the announced digest."""
    path = parse("s/file.bin")
    upload_id = storage.create_multipart(path, size=6, sha256=None)
    upload_parts(storage, path, upload_id, [b"abc", b"def"])
    parts = storage.list_parts(path, upload_id)
    send(storage.presign_part(path, upload_id, 2, 3, 60), b"defg")  # replaced, one byte longer
    with pytest.raises(FailedPrecondition, match="7 bytes, not 6"):
        storage.complete_multipart(path, upload_id, parts, size=6, sha256=None, overwrite=False)
    with pytest.raises(NotFound):
        storage.stat(path)
    assert len(names_below(raw, prefix)) == 2  # the parts remain, for an abort


def test_presign_download_describes_and_pins_the_generation(
    storage: GCSStorage, raw: gcs.Bucket, prefix: str, gcs_endpoint: str
) -> None:
    """The URL names the generation it describes. The emulator serves the live object whatever
    the generation, so that real GCS refuses a replaced one is not shown here."""
    store(storage, "dl/file.txt", b"version one")
    entry, request = storage.presign_download(parse("dl/file.txt"), 120)
    generation = raw.get_blob(f"{UNIT}/{prefix}/dl/file.txt").generation
    query = parse_qs(urlsplit(request.url).query)
    assert query["generation"] == [str(generation)]
    assert query["X-Goog-Expires"] == ["120"]
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert request.url.startswith(f"{gcs_endpoint}/{BUCKET}/{UNIT}/{prefix}/dl/file.txt?")
    assert time.time() + 110 < request.expires_at <= time.time() + 120
    assert entry.size == len(b"version one")
    assert send(request)[2] == b"version one"

    store(storage, "dl/file.txt", b"version two")
    _, again = storage.presign_download(parse("dl/file.txt"), 120)
    assert parse_qs(urlsplit(again.url).query)["generation"] != [str(generation)]


def test_presign_download_of_what_is_not_a_file(storage: GCSStorage) -> None:
    store(storage, "dir/file.txt", b"x")
    with pytest.raises(NotFound):
        storage.presign_download(parse("dir/missing.txt"), 60)
    with pytest.raises(FailedPrecondition):
        storage.presign_download(parse("dir"), 60)


def test_create_refuses_what_cannot_be_a_file(storage: GCSStorage) -> None:
    store(storage, "c/file.txt", b"x")
    with pytest.raises(FailedPrecondition):
        storage.create_multipart(parse("c"), size=1, sha256=None)  # a directory
    with pytest.raises(FailedPrecondition):
        storage.create_multipart(parse("c/file.txt/below"), size=1, sha256=None)  # below a file


def test_presign_part_checks_its_arguments(storage: GCSStorage) -> None:
    path = parse("x.bin")
    upload_id = storage.create_multipart(path, size=1, sha256=None)
    with pytest.raises(InvalidArgument):
        storage.presign_part(path, upload_id, 0, 1, 60)
    with pytest.raises(InvalidArgument):
        storage.presign_part(path, upload_id, 10_001, 1, 60)
    with pytest.raises(InvalidArgument):
        storage.presign_part(path, upload_id, 1, 5 * 1024**3 + 1, 60)
    with pytest.raises(NotFound):
        storage.presign_part(path, "../../elsewhere", 1, 1, 60)
    request = storage.presign_part(path, upload_id, 1, 1, 30 * 24 * 3600)
    # V4 URLs live at most seven days
    assert parse_qs(urlsplit(request.url).query)["X-Goog-Expires"] == [str(7 * 24 * 3600)]


def test_the_sweep_removes_stale_parts(storage: GCSStorage, raw: gcs.Bucket, prefix: str) -> None:
    path = parse("w/file.bin")
    upload_id = storage.create_multipart(path, size=2, sha256=None)
    upload_parts(storage, path, upload_id, [b"a", b"b"])
    assert storage.sweep_incomplete_uploads(3600) == 0  # young: kept
    assert len(names_below(raw, prefix)) == 2
    time.sleep(0.01)
    assert storage.sweep_incomplete_uploads(0) == 2
    assert names_below(raw, prefix) == []


def test_without_signing_credentials_nothing_is_offered(
    gcs_endpoint: str, tmp_path: Path, prefix: str
) -> None:
    env = gcs_server_env(gcs_endpoint, tmp_path)  # anonymous: the emulator's client cannot sign
    storage = GCSStorage(f"gs://{BUCKET}/{UNIT}/{prefix}", environ=env)
    try:
        refusal = storage.direct_upload_refusal()
        assert refusal is not None
        assert SIGNING_KEY_VARIABLE in refusal
        assert not storage.capabilities.multipart_upload
        assert not storage.capabilities.presigned_urls
        assert storage.capabilities.range_reads
        store(storage, "f.txt", b"x")
        with pytest.raises(FailedPrecondition, match=SIGNING_KEY_VARIABLE):
            storage.presign_download(parse("f.txt"), 60)
        with pytest.raises(FailedPrecondition, match=SIGNING_KEY_VARIABLE):
            storage.create_multipart(parse("g.txt"), size=1, sha256=None)
    finally:
        storage.close()


def test_capabilities_belong_to_each_root(
    gcs_endpoint: str, tmp_path: Path, signing_key: Path
) -> None:
    env = gcs_server_env(gcs_endpoint, tmp_path)
    plain = GCSStorage(f"gs://{BUCKET}/{UNIT}/plain", environ=env)
    signing = GCSStorage(
        f"gs://{BUCKET}/{UNIT}/signing", environ={**env, SIGNING_KEY_VARIABLE: str(signing_key)}
    )
    try:
        assert not plain.capabilities.presigned_urls
        assert signing.capabilities.presigned_urls
        assert signing.capabilities.multipart_upload
        assert "capabilities" not in vars(GCSStorage)
    finally:
        plain.close()
        signing.close()


@pytest.mark.parametrize("content", [None, "{not json", '{"type": "service_account"}'])
def test_an_unusable_signing_key_file_is_refused_at_start(
    gcs_endpoint: str, tmp_path: Path, content: str | None
) -> None:
    key_file = tmp_path / "key.json"
    if content is not None:
        key_file.write_text(content)
    env = {**gcs_server_env(gcs_endpoint, tmp_path), SIGNING_KEY_VARIABLE: str(key_file)}
    with pytest.raises(InvalidArgument, match=SIGNING_KEY_VARIABLE):
        GCSStorage(f"gs://{BUCKET}/{UNIT}/x", environ=env)


def test_folding_takes_as_many_rounds_as_needed(
    storage: GCSStorage, raw: gcs.Bucket, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond 32 * 32 parts one round of folding is not enough; shown with a limit of 3 (1025
    real parts take the single-threaded emulator half a minute): 10 parts are composed as
    3 + 3 + 3 (the tenth carried over), then 3 (+ the carried one), then the last two."""
    monkeypatch.setattr(gcs_adapter, "MAX_COMPOSE", 3)
    composed: list[int] = []
    compose = gcs.Blob.compose

    def counting(self: gcs.Blob, sources: list[gcs.Blob], **kwargs: Any) -> Any:
        composed.append(len(sources))
        return compose(self, sources, **kwargs)

    monkeypatch.setattr(gcs.Blob, "compose", counting)
    parts = [b"%d," % n for n in range(1, 11)]
    data = b"".join(parts)
    path = parse("rounds/file.bin")
    upload_id = storage.create_multipart(path, size=len(data), sha256=None)
    upload_parts(storage, path, upload_id, parts)
    listed = storage.list_parts(path, upload_id)
    storage.complete_multipart(path, upload_id, listed, size=len(data), sha256=None, overwrite=True)
    assert composed == [3, 3, 3, 3, 2]
    assert read(storage, "rounds/file.bin") == data
    assert names_below(raw, prefix) == ["rounds/file.bin"]


def test_streamed_uploads_share_the_compose_path(
    gcs_env: dict[str, str], prefix: str, raw: gcs.Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The streamed upload's chunks go through the same composing and fail-if-exists code."""
    chunk = 256 * 1024
    env = {**gcs_env, "MLFLOW_GCS_UPLOAD_CHUNK_SIZE": str(chunk)}
    storage = GCSStorage(f"gs://{BUCKET}/{UNIT}/{prefix}", environ=env)
    composed: list[int] = []
    compose = gcs.Blob.compose

    def counting(self: gcs.Blob, sources: list[gcs.Blob], **kwargs: Any) -> Any:
        composed.append(len(sources))
        return compose(self, sources, **kwargs)

    monkeypatch.setattr(gcs.Blob, "compose", counting)
    data = bytes(range(256)) * (chunk * 33 // 256) + b"end"
    try:
        store(storage, "streamed.bin", data)
        assert composed == [32, 3]  # 32 chunks folded, then that, the 33rd and the tail
        assert read(storage, "streamed.bin") == data
        assert storage.stat(parse("streamed.bin")).sha256 == hashlib.sha256(data).hexdigest()
        assert names_below(raw, prefix) == ["streamed.bin"]
        with storage.start_upload(parse("streamed.bin")) as upload:
            upload.write(b"x" * (chunk + 1))
            with pytest.raises(AlreadyExists):
                upload.commit(hashlib.sha256(b"x" * (chunk + 1)).hexdigest(), overwrite=False)
        assert read(storage, "streamed.bin") == data
        assert names_below(raw, prefix) == ["streamed.bin"]
    finally:
        storage.close()
