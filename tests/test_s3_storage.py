"""S3-specific behaviour of the S3 adapter: configuration checks, key layout, digests, sweeping.

What every backend must do alike is in test_backend_conformance.py; this covers what only S3 has.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from artifactd.protocol.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from artifactd.protocol.paths import ROOT, parse
from artifactd_server.storage import open_storage
from artifactd_server.storage.s3 import PART_SIZE, S3Storage, s3_error, validate_endpoint_url

from backend_servers import BUCKET, S3_REGION, s3_server_env
from servers import start_server


@pytest.fixture
def s3_env(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    env = s3_server_env(moto_endpoint, tmp_path)
    for name, value in env.items():
        if name != "MLFLOW_S3_ENDPOINT_URL":  # the test process must not look like a client of it
            monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return env


@pytest.fixture
def storage(s3_env: dict[str, str], prefix: str) -> Iterator[S3Storage]:
    s = S3Storage(f"s3://{BUCKET}/unit/{prefix}/", environ=s3_env)
    yield s
    s.close()


def store(storage: S3Storage, path: str, data: bytes, *, overwrite: bool = True) -> None:
    with storage.start_upload(parse(path)) as upload:
        for start in range(0, len(data), 1 << 20):
            upload.write(data[start : start + (1 << 20)])
        upload.commit(hashlib.sha256(data).hexdigest(), overwrite=overwrite)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000"),
        ("https://s3.example.test/", "https://s3.example.test"),
        ("http://[::1]:9000", "http://[::1]:9000"),
    ],
)
def test_endpoint_url_accepted(url: str, expected: str) -> None:
    assert validate_endpoint_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9000/bucket",
        "http://127.0.0.1:9000/bucket/key",
        "127.0.0.1:9000",
        "ftp://host",
        "http://host?x=1",
        "http://user:pw@host",
        "http://host:99999",
    ],
)
def test_endpoint_url_refused(url: str) -> None:
    with pytest.raises(InvalidArgument, match="MLFLOW_S3_ENDPOINT_URL"):
        validate_endpoint_url(url)


@pytest.mark.parametrize(
    ("destination", "uri"),
    [
        ("s3://my-bucket", "s3://my-bucket"),
        ("s3://my-bucket/", "s3://my-bucket"),
        ("s3://my-bucket/a/b/", "s3://my-bucket/a/b"),
        ("S3://my-bucket//a/b", "s3://my-bucket/a/b"),
    ],
)
def test_uri_is_normalised(destination: str, uri: str) -> None:
    assert S3Storage(destination, environ={"AWS_DEFAULT_REGION": S3_REGION}).uri == uri


@pytest.mark.parametrize(
    "destination",
    ["s3://", "s3://B", "s3://ab", "s3://bucket/a/../b", "s3://bucket/a//b", "s3://b:1@x/y"],
)
def test_bad_destinations_are_refused(destination: str) -> None:
    with pytest.raises(InvalidArgument):
        open_storage(destination)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"Bucket": "other"}', "'Bucket'"),
        ('{"NoSuchParameter": 1}', "'NoSuchParameter'"),
        ('{"Metadata": {"a": 1}}', "Metadata"),
    ],
)
def test_malformed_upload_extra_args_are_refused(value: str, message: str) -> None:
    environ = {"AWS_DEFAULT_REGION": S3_REGION, "MLFLOW_S3_UPLOAD_EXTRA_ARGS": value}
    with pytest.raises(InvalidArgument, match=message):
        S3Storage("s3://bucket/p", environ=environ)


def test_server_refuses_to_start_with_an_endpoint_path(tmp_path: Path) -> None:
    env = s3_server_env("http://127.0.0.1:9/bucket", tmp_path)
    with pytest.raises(RuntimeError, match="must be only scheme://host"):
        start_server(tmp_path / "x", tmp_path / "run", destination=f"s3://{BUCKET}/p", env=env)


def test_keys_metadata_and_extra_args(
    s3_env: dict[str, str], prefix: str, moto_endpoint: str
) -> None:
    environ = {**s3_env, "MLFLOW_S3_UPLOAD_EXTRA_ARGS": '{"Metadata": {"team": "ml"}}'}
    storage = S3Storage(f"s3://{BUCKET}/unit/{prefix}", environ=environ)
    small, big = b"small", b"\x01" * (PART_SIZE + 5)
    store(storage, "d/small.txt", small)
    store(storage, "d/big.bin", big)
    client: Any = storage.client
    for name, data in (("small.txt", small), ("big.bin", big)):
        head = client.head_object(Bucket=BUCKET, Key=f"unit/{prefix}/d/{name}")
        assert head["Metadata"] == {"team": "ml", "sha256": hashlib.sha256(data).hexdigest()}
        assert head["ContentLength"] == len(data)
    keys = client.list_objects_v2(Bucket=BUCKET, Prefix=f"unit/{prefix}/")["Contents"]
    assert sorted(k["Key"] for k in keys) == [
        f"unit/{prefix}/d/big.bin",
        f"unit/{prefix}/d/small.txt",
    ]
    storage.close()


def test_foreign_keys_are_listed_sensibly(storage: S3Storage, prefix: str) -> None:
    """Directory markers, `//` and reserved names made by other tools are not listed."""
    client: Any = storage.client
    base = f"unit/{prefix}"
    for key in ("dir/", "dir/file", "x//y", ".artifactd-upload-1", "ok"):
        client.put_object(Bucket=BUCKET, Key=f"{base}/{key}", Body=b"1")
    listed = [(str(e.path), e.is_dir) for e in storage.iter_tree(ROOT, recursive=True)]
    assert listed == [("dir", True), ("dir/file", False), ("ok", False), ("x", True)]
    assert storage.stat(parse("dir/file")).sha256 is None  # not written by artifactd


def test_missing_bucket_is_a_clear_error(s3_env: dict[str, str]) -> None:
    storage = S3Storage("s3://no-such-bucket-here/p", environ=s3_env)
    with pytest.raises(FailedPrecondition, match="no-such-bucket-here"):
        storage.stat(parse("x"))
    with pytest.raises(FailedPrecondition, match="does not exist"):
        list(storage.iter_tree(ROOT, recursive=False))


def test_unreachable_store_is_unavailable(s3_env: dict[str, str]) -> None:
    environ = {**s3_env, "MLFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    storage = S3Storage(f"s3://{BUCKET}/p", environ=environ)
    with pytest.raises(Unavailable, match="could not be reached"):
        storage.stat(parse("x"))


def test_error_mapping_keeps_the_message_and_no_secrets() -> None:
    from botocore.exceptions import ClientError

    def failure(code: str, status: int) -> ClientError:
        body: Any = {"Error": {"Code": code, "Message": f"{code} says no"}}
        body["ResponseMetadata"] = {"HTTPStatusCode": status}
        return ClientError(body, "GetObject")

    path = parse("a/b")
    assert isinstance(s3_error(failure("NoSuchKey", 404), path, "b"), NotFound)
    denied = s3_error(failure("AccessDenied", 403), path, "b")
    assert isinstance(denied, PermissionDenied) and "AccessDenied says no" in denied.message
    assert isinstance(s3_error(failure("SlowDown", 503), path, "b"), Unavailable)
    assert isinstance(s3_error(failure("InternalError", 500), path, "b"), Unavailable)
    assert "testing" not in denied.message


def test_sweep_aborts_only_stale_multipart_uploads(storage: S3Storage, prefix: str) -> None:
    client: Any = storage.client
    key = f"unit/{prefix}/left-behind"
    upload_id = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    # moto reports every upload as initiated in 2010: what keeps one alive is its latest part.
    client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x")
    assert storage.sweep_incomplete_uploads(3600) == 0  # a part just arrived: still being written
    assert storage.sweep_incomplete_uploads(-60) == 1
    uploads = client.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])
    assert upload_id not in [u["UploadId"] for u in uploads]
