"""Direct (presigned multipart) uploads and presigned downloads on S3, through a real server.

Each test runs on moto's S3 server and on SeaweedFS (`s3_service`), behind `fault_proxy` (a real
HTTP proxy that can answer 503, 403 or hang for a chosen part; it keeps the Host header, as a
reverse proxy in front of a signature-checking store must). The artifactd server's S3 endpoint is
the proxy, so the URLs it signs lead there too. moto checks neither signatures nor expiry;
SeaweedFS checks both, so there a forged or expired URL is refused by storage itself
(test_storage_refuses_forged_and_expired_urls); elsewhere a refused URL is the proxy's 403.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc
import pytest

from artifactd.client import ArtifactClient
from artifactd.client.direct import DirectSettings
from artifactd.protocol.errors import DataLoss, FailedPrecondition, NotFound
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

from backend_servers import BUCKET, S3_PREFIX, S3Service
from fault_proxy import HANG, FaultProxy
from servers import ServerProcess, start_server

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part
SIZE = 12 * MiB  # three parts: 5, 5 and 2 MiB


@pytest.fixture(scope="module")
def proxy(s3_service: S3Service) -> Iterator[FaultProxy]:
    proxy = FaultProxy(s3_service.endpoint, keep_host=True)
    proxy.start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="module")
def s3_server(
    s3_service: S3Service, proxy: FaultProxy, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("direct-s3")
    server = start_server(
        base / "unused", base / "run", "--multipart-session-ttl", "3",
        destination=f"s3://{BUCKET}/{S3_PREFIX}",
        env=s3_service.server_env(base, endpoint=proxy.endpoint),
    )  # fmt: skip
    yield server
    assert server.stop() == 0, server.log_text()


@pytest.fixture
def s3(s3_service: S3Service) -> Iterator[Any]:
    client = s3_service.client()
    yield client
    client.close()


@pytest.fixture
def faults(proxy: FaultProxy) -> Iterator[FaultProxy]:
    proxy.faults.clear()
    proxy.part_puts.clear()
    proxy.ranges.clear()
    proxy.release.clear()
    yield proxy
    proxy.release.set()
    proxy.faults.clear()


def direct_settings(tmp_path: Path) -> DirectSettings:
    return DirectSettings(
        enabled=True, minimum_size=MiB, part_size=PART, workers=3, state_dir=str(tmp_path / "state")
    )


@pytest.fixture
def client(s3_server: ServerProcess, tmp_path: Path) -> Iterator[ArtifactClient]:
    with ArtifactClient(s3_server.target, direct=direct_settings(tmp_path)) as c:
        yield c


@pytest.fixture
def stub(s3_server: ServerProcess) -> Iterator[pb_grpc.ArtifactServiceStub]:
    with grpc.insecure_channel(s3_server.target) as channel:
        yield pb_grpc.ArtifactServiceStub(channel)


def big_file(tmp_path: Path, name: str = "weights.bin", size: int = SIZE) -> Path:
    path = tmp_path / "src" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    return path


def open_uploads(s3: Any, prefix: str) -> list[str]:
    reply = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/{prefix}/")
    return [u["Key"] for u in reply.get("Uploads", [])]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_large_file_goes_straight_to_storage(
    client: ArtifactClient, faults: FaultProxy, s3: Any, prefix: str, tmp_path: Path
) -> None:
    local = big_file(tmp_path)
    info = client.log_artifact(local, prefix)
    assert (info.path, info.file_size, info.sha256) == (f"{prefix}/weights.bin", SIZE, sha(local))
    assert sorted(faults.part_puts) == [1, 2, 3]  # three parts went through presigned PUTs
    assert client.get_artifact_info(f"{prefix}/weights.bin").sha256 == sha(local)
    stored = s3.get_object(Bucket=BUCKET, Key=f"{S3_PREFIX}/{prefix}/weights.bin")["Body"].read()
    assert stored == local.read_bytes()
    back = client.download_artifacts(f"{prefix}/weights.bin", tmp_path / "back")
    assert Path(back).read_bytes() == local.read_bytes()
    assert open_uploads(s3, prefix) == []
    assert not list((tmp_path / "state").glob("*.json")), "the resume record is removed"


def test_a_failed_part_is_retried(
    client: ArtifactClient, faults: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    faults.faults[2] = [503, 500]
    local = big_file(tmp_path)
    assert client.log_artifact(local, prefix).sha256 == sha(local)
    assert sorted(faults.part_puts) == [1, 2, 3]  # part 2 reached storage on its third try


def test_a_refused_url_is_signed_again(
    client: ArtifactClient, faults: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    faults.faults[3] = [403]
    local = big_file(tmp_path)
    assert client.log_artifact(local, prefix).sha256 == sha(local)


def test_a_fatal_part_failure_aborts_and_leaves_nothing(
    client: ArtifactClient, faults: FaultProxy, s3: Any, prefix: str, tmp_path: Path
) -> None:
    faults.faults[1] = [400]
    local = big_file(tmp_path)
    with pytest.raises(FailedPrecondition, match="refused part 1 with HTTP 400"):
        client.log_artifact(local, prefix)
    assert open_uploads(s3, prefix) == []
    with pytest.raises(NotFound):
        client.get_artifact_info(f"{prefix}/weights.bin")


def test_a_killed_client_resumes_with_the_parts_it_had_sent(
    s3_server: ServerProcess, faults: FaultProxy, s3: Any, prefix: str, tmp_path: Path
) -> None:
    local = big_file(tmp_path)
    faults.faults[3] = [HANG]
    state = tmp_path / "state"
    script = (
        "import sys; from artifactd.client import ArtifactClient\n"
        "from artifactd.client.direct import DirectSettings\n"
        f"s = DirectSettings(True, {MiB}, {PART}, 3, {str(state)!r})\n"
        f"ArtifactClient({s3_server.target!r}, direct=s).log_artifact({str(local)!r}, {prefix!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while sorted(faults.part_puts) != [1, 2]:
            assert process.poll() is None and time.monotonic() < deadline, faults.part_puts
            time.sleep(0.05)
        time.sleep(0.3)  # let the client record parts 1 and 2 as done on storage's side
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert open_uploads(s3, prefix), "the killed client's upload is still open"
    faults.release.set()
    faults.part_puts.clear()
    with ArtifactClient(s3_server.target, direct=direct_settings(tmp_path)) as client:
        info = client.log_artifact(local, prefix)
    assert info.sha256 == sha(local)
    assert faults.part_puts == [3], "only the missing part was sent again"
    assert open_uploads(s3, prefix) == []


def create(
    stub: pb_grpc.ArtifactServiceStub, path: str, size: int = SIZE, **fields: Any
) -> pb.CreateMultipartUploadResponse:
    return stub.CreateMultipartUpload(
        pb.CreateMultipartUploadRequest(
            **{"path": path, "size": size, "part_size": PART, **fields}
        ),
        timeout=30,
    )


def put(part: pb.UploadPart, data: bytes) -> str:
    headers = {"Content-Type": "application/octet-stream", **part.request.headers}
    request = urllib.request.Request(  # noqa: S310 - the proxy on 127.0.0.1
        part.request.url, data=data, method="PUT", headers=headers
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return str(response.headers["ETag"])


def test_the_protocol_checks_parts_before_publishing(
    stub: pb_grpc.ArtifactServiceStub, faults: FaultProxy, s3: Any, prefix: str
) -> None:
    data = os.urandom(SIZE)
    created = create(stub, f"{prefix}/model.bin", sha256=hashlib.sha256(data).hexdigest())
    assert created.supported and (created.part_size, created.part_count) == (PART, 3)
    assert [(p.part_number, p.offset, p.size) for p in created.parts] == [
        (1, 0, PART), (2, PART, PART), (3, 2 * PART, SIZE - 2 * PART),
    ]  # fmt: skip
    etags = [put(p, data[p.offset : p.offset + p.size]) for p in created.parts[:2]]
    upload_id = created.upload_id

    def complete(parts: list[tuple[int, str]]) -> pb.CompleteMultipartUploadResponse:
        request = pb.CompleteMultipartUploadRequest(
            upload_id=upload_id, parts=[pb.StoredPart(part_number=n, etag=e) for n, e in parts]
        )
        return stub.CompleteMultipartUpload(request, timeout=30)

    with pytest.raises(grpc.RpcError) as info:
        complete([(1, etags[0]), (2, etags[1])])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing parts 3" in str(info.value.details())
    with pytest.raises(grpc.RpcError) as info:
        complete([(1, etags[0]), (2, etags[1]), (3, '"0"')])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "storage holds no parts 3" in str(info.value.details())
    listed = stub.ListMultipartUploadParts(
        pb.ListMultipartUploadPartsRequest(upload_id=upload_id), timeout=30
    )
    assert [(p.part_number, p.size) for p in listed.parts] == [(1, PART), (2, PART)]
    fresh = stub.GetMultipartUploadUrls(
        pb.GetMultipartUploadUrlsRequest(upload_id=upload_id, part_numbers=[3]), timeout=30
    )
    etags.append(put(fresh.parts[0], data[2 * PART :]))
    with pytest.raises(grpc.RpcError) as info:
        complete([(1, etags[0]), (2, '"not-the-etag"'), (3, etags[2])])
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "ETags given for parts 2" in str(info.value.details())
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/{prefix}/").get("KeyCount") == 0
    done = complete(list(zip((1, 2, 3), etags, strict=True)))
    assert (done.file.path, done.file.file_size) == (f"{prefix}/model.bin", SIZE)
    assert done.file.sha256 == hashlib.sha256(data).hexdigest()
    with pytest.raises(grpc.RpcError) as info:  # a completed session is closed
        complete(list(zip((1, 2, 3), etags, strict=True)))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("upload_id", ["", "0" * 32, "../../etc", "x" * 5000])
def test_unknown_or_forged_upload_ids_are_refused(
    stub: pb_grpc.ArtifactServiceStub, upload_id: str
) -> None:
    for call, request in (
        (stub.ListMultipartUploadParts, pb.ListMultipartUploadPartsRequest(upload_id=upload_id)),
        (stub.CompleteMultipartUpload, pb.CompleteMultipartUploadRequest(upload_id=upload_id)),
        (stub.GetMultipartUploadUrls, pb.GetMultipartUploadUrlsRequest(
            upload_id=upload_id, part_numbers=[1])),
    ):  # fmt: skip
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
        assert info.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    reply = stub.AbortMultipartUpload(
        pb.AbortMultipartUploadRequest(upload_id=upload_id or "none"), timeout=30
    )
    assert not reply.existed


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"size": 0}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"sha256": "abc"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"part_size": -1}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_create_requests_are_refused(
    stub: pb_grpc.ArtifactServiceStub, prefix: str, fields: dict[str, Any], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        create(stub, f"{prefix}/x.bin", **fields)
    assert info.value.code() == code


@pytest.mark.parametrize("path", ["../escape.bin", "/abs.bin", "a//b.bin", "a/./b.bin", ""])
def test_create_applies_the_path_grammar(stub: pb_grpc.ArtifactServiceStub, path: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        create(stub, path)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_fail_if_exists_is_checked_at_create_and_at_complete(
    client: ArtifactClient, stub: pb_grpc.ArtifactServiceStub, faults: FaultProxy, prefix: str,
    tmp_path: Path, s3: Any,
) -> None:  # fmt: skip
    local = big_file(tmp_path)
    client.log_artifact(local, prefix)
    with pytest.raises(grpc.RpcError) as info:
        create(stub, f"{prefix}/weights.bin", overwrite=pb.OVERWRITE_POLICY_FAIL_IF_EXISTS)
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    # Created before the file existed, completed after: refused atomically, parts freed.
    data = os.urandom(SIZE)
    created = create(stub, f"{prefix}/late.bin", overwrite=pb.OVERWRITE_POLICY_FAIL_IF_EXISTS)
    etags = [put(p, data[p.offset : p.offset + p.size]) for p in created.parts]
    client.log_artifact(big_file(tmp_path, "late.bin"), prefix)
    with pytest.raises(grpc.RpcError) as info:
        stub.CompleteMultipartUpload(
            pb.CompleteMultipartUploadRequest(
                upload_id=created.upload_id,
                parts=[pb.StoredPart(part_number=n, etag=e) for n, e in enumerate(etags, 1)],
            ),
            timeout=30,
        )
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert client.get_artifact_info(f"{prefix}/late.bin").sha256 == sha(tmp_path / "src/late.bin")
    assert open_uploads(s3, prefix) == []


def test_expired_sessions_are_swept(
    stub: pb_grpc.ArtifactServiceStub, faults: FaultProxy, s3: Any, prefix: str
) -> None:
    """The server here runs with --multipart-session-ttl 3."""
    created = create(stub, f"{prefix}/abandoned.bin")
    put(created.parts[0], os.urandom(PART))
    assert open_uploads(s3, prefix) == [f"{S3_PREFIX}/{prefix}/abandoned.bin"]
    deadline = time.monotonic() + 30
    while open_uploads(s3, prefix):
        assert time.monotonic() < deadline, "the expired session's parts are still in storage"
        time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as info:
        stub.ListMultipartUploadParts(
            pb.ListMultipartUploadPartsRequest(upload_id=created.upload_id), timeout=30
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def _forged(url: str) -> str:
    """`url` with the first hex digit of its signature changed."""
    head, _, signature = url.partition("X-Amz-Signature=")
    assert signature, url
    return f"{head}X-Amz-Signature={'1' if signature[0] == '0' else '0'}{signature[1:]}"


@pytest.mark.parametrize("s3_service", ["seaweedfs"], indirect=True)  # moto accepts anything
def test_storage_refuses_forged_and_expired_urls(
    stub: pb_grpc.ArtifactServiceStub, faults: FaultProxy, s3_service: S3Service, s3: Any,
    prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    """Signatures are checked by storage itself: a part URL past its expiry, one with an altered
    signature or one signed with another secret is refused (403) and stores nothing; the URL the
    server signed works; a forged download URL is refused too."""
    data = os.urandom(PART)
    # Expiry first, on an upload of storage's own (this server's sessions last 3 s).
    key = f"{S3_PREFIX}/{prefix}/expiring.bin"
    upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    params = {"Bucket": BUCKET, "Key": key, "UploadId": upload_id, "PartNumber": 1}
    expiring = s3.generate_presigned_url("upload_part", Params=params, ExpiresIn=1)
    time.sleep(2.1)
    late = urllib.request.Request(expiring, data=data, method="PUT")  # noqa: S310 - 127.0.0.1
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(late, timeout=30)  # noqa: S310
    assert info.value.code == 403
    assert "expired" in info.value.read().decode(errors="replace").lower()
    assert s3.list_parts(Bucket=BUCKET, Key=key, UploadId=upload_id).get("Parts", []) == []
    s3.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload_id)

    created = create(
        stub, f"{prefix}/signed.bin", size=PART, sha256=hashlib.sha256(data).hexdigest()
    )
    genuine = created.parts[0]
    storage_id = parse_qs(urlsplit(genuine.request.url).query)["uploadId"][0]
    params = {
        "Bucket": BUCKET, "Key": f"{S3_PREFIX}/{prefix}/signed.bin", "UploadId": storage_id,
        "PartNumber": 1,
    }  # fmt: skip
    stranger: Any = s3_service.client(secret_key="not-the-secret")
    attempts = {
        "altered signature": _forged(genuine.request.url),
        "another secret": stranger.generate_presigned_url("upload_part", Params=params),
    }
    stranger.close()
    for what, url in attempts.items():
        part = pb.UploadPart()
        part.CopyFrom(genuine)
        part.request.url = url
        with pytest.raises(urllib.error.HTTPError) as info:
            put(part, data)
        assert info.value.code == 403, what
        assert "SignatureDoesNotMatch" in info.value.read().decode(errors="replace"), what
    listed = stub.ListMultipartUploadParts(
        pb.ListMultipartUploadPartsRequest(upload_id=created.upload_id), timeout=30
    )
    assert list(listed.parts) == [], "a refused URL stored nothing"
    etag = put(genuine, data)
    done = stub.CompleteMultipartUpload(
        pb.CompleteMultipartUploadRequest(
            upload_id=created.upload_id, parts=[pb.StoredPart(part_number=1, etag=etag)]
        ),
        timeout=30,
    )
    assert done.file.sha256 == hashlib.sha256(data).hexdigest()
    reply = stub.GetDownloadUrl(pb.GetDownloadUrlRequest(path=f"{prefix}/signed.bin"), timeout=30)
    request = urllib.request.Request(  # noqa: S310 - the proxy on 127.0.0.1
        _forged(reply.request.url), headers=dict(reply.request.headers)
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310
    assert info.value.code == 403


def test_presigned_download(
    client: ArtifactClient, stub: pb_grpc.ArtifactServiceStub, faults: FaultProxy, prefix: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    local = big_file(tmp_path, size=2 * MiB)
    client.log_artifact(local, prefix)
    reply = stub.GetDownloadUrl(pb.GetDownloadUrlRequest(path=f"{prefix}/weights.bin"), timeout=30)
    assert reply.supported and reply.file.sha256 == sha(local)
    assert reply.request.method == "GET" and "If-Match" in reply.request.headers
    request = urllib.request.Request(reply.request.url, headers=dict(reply.request.headers))  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        assert response.read() == local.read_bytes()
    with pytest.raises(grpc.RpcError) as info:
        stub.GetDownloadUrl(pb.GetDownloadUrlRequest(path=f"{prefix}/missing.bin"), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_local_storage_is_not_presignable_and_the_client_streams(
    tmp_path: Path,
) -> None:
    server = start_server(tmp_path / "store", tmp_path / "run")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            assert not create(stub, "a/b.bin").supported
            with pytest.raises(grpc.RpcError) as missing:  # checked like any other path RPC
                stub.GetDownloadUrl(pb.GetDownloadUrlRequest(path="a/b.bin"), timeout=30)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        local = big_file(tmp_path, size=3 * MiB)
        with ArtifactClient(server.target, direct=direct_settings(tmp_path)) as client:
            assert client.log_artifact(local, "a").sha256 == sha(local)
        assert (tmp_path / "store/a/weights.bin").read_bytes() == local.read_bytes()
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.ArtifactServiceStub(channel)
            request = pb.GetDownloadUrlRequest(path="a/weights.bin")
            assert not stub.GetDownloadUrl(request, timeout=30).supported
    finally:
        assert server.stop() == 0


def test_large_downloads_fetch_ranges_straight_from_storage(
    s3_server: ServerProcess, faults: FaultProxy, prefix: str, tmp_path: Path
) -> None:
    settings = dataclasses.replace(
        direct_settings(tmp_path), download_minimum_size=MiB, download_chunk_size=2 * MiB
    )
    local = big_file(tmp_path, size=5 * MiB + 7)
    with ArtifactClient(s3_server.target, direct=settings) as client:
        client.log_artifact(local, prefix)
        back = client.download_artifacts(f"{prefix}/weights.bin", tmp_path / "back")
        assert Path(back).read_bytes() == local.read_bytes()
        assert sorted(faults.ranges) == [
            "bytes=0-2097151", "bytes=2097152-4194303", "bytes=4194304-5242886",
        ]  # fmt: skip
        assert not [p for p in Path(back).parent.iterdir() if p.name != "weights.bin"]
        small = big_file(tmp_path, "small.bin", size=MiB - 1)
        client.log_artifact(small, prefix)
        faults.ranges.clear()
        client.download_artifacts(f"{prefix}/small.bin", tmp_path / "back")
        assert faults.ranges == [], "below the threshold the gRPC stream is used"


def test_a_direct_download_that_does_not_match_its_sha256_is_discarded(
    s3_server: ServerProcess, faults: FaultProxy, s3: Any, prefix: str, tmp_path: Path
) -> None:
    """The client hashes ranges as they land (in order, on its own thread) and compares the
    whole with the stored sha256: a mismatch publishes nothing and leaves no temporary file."""
    settings = dataclasses.replace(
        direct_settings(tmp_path), download_minimum_size=MiB, download_chunk_size=MiB
    )
    local = big_file(tmp_path, size=5 * MiB + 7)
    key = f"{S3_PREFIX}/{prefix}/weights.bin"
    with ArtifactClient(s3_server.target, direct=settings) as client:
        client.log_artifact(local, prefix)
        back = client.download_artifacts(f"{prefix}/weights.bin", tmp_path / "good")
        assert Path(back).read_bytes() == local.read_bytes()
        s3.copy_object(  # the bytes stay; the digest recorded with them is now another file's
            Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": key},
            MetadataDirective="REPLACE", Metadata={"sha256": "0" * 64},
        )  # fmt: skip
        faults.ranges.clear()
        with pytest.raises(DataLoss, match="the download was discarded"):
            client.download_artifacts(f"{prefix}/weights.bin", tmp_path / "bad")
    assert len(faults.ranges) == 6, "fetched directly, in 1 MiB ranges"
    assert [p for p in (tmp_path / "bad").rglob("*") if p.is_file()] == []


def test_a_file_replaced_during_a_direct_download_is_not_mixed(
    client: ArtifactClient, stub: pb_grpc.ArtifactServiceStub, faults: FaultProxy,
    prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    local = big_file(tmp_path, size=2 * MiB)
    client.log_artifact(local, prefix)
    reply = stub.GetDownloadUrl(pb.GetDownloadUrlRequest(path=f"{prefix}/weights.bin"), timeout=30)
    client.log_artifact(big_file(tmp_path, size=2 * MiB), prefix)  # replaced
    request = urllib.request.Request(reply.request.url, headers=dict(reply.request.headers))  # noqa: S310
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310
    assert info.value.code == 412


def test_runs_scope_direct_uploads_and_gc_aborts_a_deleted_runs_uploads(
    s3_server: ServerProcess, stub: pb_grpc.ArtifactServiceStub, faults: FaultProxy, s3: Any,
    prefix: str, tmp_path: Path,
) -> None:  # fmt: skip
    from artifactd.client.tracking import TrackingClient

    with TrackingClient(s3_server.target) as tracking:
        experiment = tracking.create_experiment(f"direct-{prefix}")
        run = tracking.create_run(experiment.experiment_id)
        created = create(stub, "model/w.bin", run_id=run.run_id)
        put(created.parts[0], os.urandom(PART))
        run_prefix = f"{S3_PREFIX}/{experiment.experiment_id}/{run.run_id}/artifacts/"
        reply = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=run_prefix)
        assert [u["Key"] for u in reply.get("Uploads", [])] == [f"{run_prefix}model/w.bin"]
        tracking.delete_run(run.run_id)
        with pytest.raises(grpc.RpcError) as info:  # a deleted run takes no new uploads
            create(stub, "model/other.bin", run_id=run.run_id)
        assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        list(tracking.collect_garbage(run_ids=[run.run_id]))
        reply = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=run_prefix)
        assert reply.get("Uploads", []) == [], "the collected run's unfinished upload is aborted"
        with pytest.raises(grpc.RpcError) as info:
            stub.ListMultipartUploadParts(
                pb.ListMultipartUploadPartsRequest(upload_id=created.upload_id), timeout=30
            )
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
