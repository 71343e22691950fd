"""MLflow's path CVEs replayed against artifactd, end to end.

Server side: raw protobuf requests on a real channel to the real server process (the client's own
checks cannot hide a server bug), every attack class on every RPC that takes a path. Each attack
aims at one sentinel file outside the artifact root, so a read would return it, a write would
change it and a delete would remove it; the test then checks the status code *and* the disk:
the sentinel is intact, nothing appeared outside the root, and nothing appeared inside it.

Client side (CVE-2024-0520): a malicious in-process server returns paths that escape the
requested directory or the download destination; the client must refuse them and write nothing
outside `dst_path`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from artifactd.client import ArtifactClient, ClientSettings
from artifactd.protocol.errors import ArtifactError
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd_server.storage.base import PRECHECKED_FROM

from servers import ServerProcess

TIMEOUT = 10.0
SENTINEL = b"sentinel: must survive every attack\n"
PAYLOAD = b"written by an attack\n"
KEEP = b"an ordinary artifact\n"

Stub = pb_grpc.ArtifactServiceStub

FW_DOT = "\uff0e"  # FULLWIDTH FULL STOP: `.` after NFKC
FW_SLASH = "\uff0f"  # FULLWIDTH SOLIDUS: `/` after NFKC
FW_ENCODED_DOT = "\uff05\uff12\uff45"  # fullwidth `%2e`: `%2e` after NFKC, then `.`


# -- what the disk looks like ---------------------------------------------------------------


def tree(root: Path) -> dict[str, str | bytes]:
    """Every entry under `root` (symlinks not followed): files with content, dirs, links."""
    found: dict[str, str | bytes] = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            full = Path(directory, name)
            rel = str(full.relative_to(root))
            if full.is_symlink():
                found[rel] = f"-> {os.readlink(full)}"
            elif full.is_dir():
                found[rel] = "<dir>"
            else:
                found[rel] = full.read_bytes()
    return found


@dataclass
class Scene:
    """A prefix with one artifact in the server's root and a sentinel outside the root."""

    root: Path
    prefix: str
    outside: Path
    before: dict[str, object] = field(default_factory=dict)

    @classmethod
    def make(cls, server: ServerProcess, prefix: str, tmp_path: Path) -> Scene:
        root = Path(os.path.realpath(server.root))
        outside = Path(os.path.realpath(tmp_path)) / "outside"
        outside.mkdir()
        (outside / "pwned.txt").write_bytes(SENTINEL)
        (outside / "dir").mkdir()
        (outside / "dir" / "inner.txt").write_bytes(SENTINEL)
        (root / prefix).mkdir()
        (root / prefix / "keep.txt").write_bytes(KEEP)
        scene = cls(root, prefix, outside)
        scene.before = scene.snapshot()
        return scene

    @property
    def up(self) -> str:
        """`../..` steps from `<root>/<prefix>` to the outside directory."""
        return os.path.relpath(self.outside, self.root / self.prefix)

    @property
    def up_from_root(self) -> str:
        return os.path.relpath(self.outside, self.root)

    def snapshot(self) -> dict[str, object]:
        # The whole root is shared by the session; its top level and this test's prefix are
        # where a mis-resolved path of these attacks could land inside it.
        return {
            "outside": tree(self.outside),
            "prefix": tree(self.root / self.prefix),
            # less the server's own owner marks, made at its first write (`storage/owners.py`)
            "root top level": sorted(set(os.listdir(self.root)) - {".artifactd-owners"}),
            "root's parent": sorted(os.listdir(self.root.parent)),
        }

    def assert_untouched(self, **expected_prefix: bytes) -> None:
        after = self.snapshot()
        before = dict(self.before)
        if expected_prefix:
            before["prefix"] = {**before["prefix"], **expected_prefix}  # type: ignore[dict-item]
        # Other tests' directories may go away meanwhile; nothing may be added next to them.
        added = set(after.pop("root top level")) - set(before.pop("root top level"))  # type: ignore[arg-type]
        assert added == set()
        assert after == before
        assert (self.outside / "pwned.txt").read_bytes() == SENTINEL


# -- attacks: each builds a path from the scene ---------------------------------------------


def _enc(text: str, times: int) -> str:
    """Percent-encodes `.` and `/` of `text`, `times` times over."""
    dot, slash = "%2e", "%2f"
    for _ in range(times - 1):
        dot, slash = dot.replace("%", "%25"), slash.replace("%", "%25")
    return text.replace(".", dot).replace("/", slash)


Attack = Callable[[Scene], str]

ATTACKS: dict[str, Attack] = {
    # issue #7166: plain `..` traversal out of the root.
    "dotdot-issue-7166": lambda s: f"{s.prefix}/{s.up}/pwned.txt",
    "dotdot-from-root": lambda s: f"{s.up_from_root}/pwned.txt",
    "dotdot-directory": lambda s: f"{s.prefix}/{s.up}/dir",
    "dotdot-outside-tree": lambda s: f"{s.prefix}/{s.up}",
    # absolute paths, and `//host`-like ones (CVE-2023-6977).
    "absolute": lambda s: f"{s.outside}/pwned.txt",
    "absolute-etc-passwd": lambda s: "/etc/passwd",
    "double-slash-CVE-2023-6977": lambda s: f"/{s.outside}/pwned.txt",
    "proc-self-root-CVE-2023-6977": lambda s: f"//proc/self/root{s.outside}/pwned.txt",
    # backslashes (CVE-2023-2780).
    "backslash-CVE-2023-2780": lambda s: s.prefix + "\\" + s.up.replace("/", "\\") + "\\pwned.txt",
    "backslash-leading": lambda s: "\\..\\..\\" + s.up.replace("/", "\\") + "\\pwned.txt",
    # `#` fragment (CVE-2023-6909 and its bypass CVE-2024-3848).
    "fragment-CVE-2023-6909": lambda s: f"{s.prefix}/x#/../{s.up}/pwned.txt",
    "fragment-CVE-2024-3848": lambda s: f"#/{s.up_from_root}/pwned.txt",
    # `;` path parameters (CVE-2024-1593).
    "params-CVE-2024-1593": lambda s: f"{s.prefix}/x;/../{s.up}/pwned.txt",
    # `?` query with `../` (PR #10653).
    "query-PR-10653": lambda s: f"{s.prefix}?x=/../{s.up}/pwned.txt",
    # percent-encoding: once, twice (CVE-2023-6831 -> CVE-2024-1560), three times.
    "encoded-once": lambda s: f"{s.prefix}/{_enc(s.up, 1)}/pwned.txt",
    "encoded-once-one-segment": lambda s: f"{s.prefix}%2f{_enc(s.up, 1)}%2fpwned.txt",
    "encoded-twice-CVE-2024-1560": lambda s: f"{s.prefix}/{_enc(s.up + '/pwned.txt', 2)}",
    "encoded-thrice": lambda s: f"{s.prefix}/{_enc(s.up + '/pwned.txt', 3)}",
    "encoded-dotdot-only": lambda s: f"{s.prefix}/%2e%2e/%2e%2e/pwned.txt",
    "encoded-nul": lambda s: f"{s.prefix}/pwned.txt%00.bin",
    "raw-nul": lambda s: f"{s.prefix}/pwned.txt\x00.bin",
    "encoded-backslash": lambda s: f"{s.prefix}%5c{s.up.replace('/', '%5c')}%5cpwned.txt",
    "overlong-utf8-dots": lambda s: f"{s.prefix}/{s.up.replace('..', '%c0%ae%c0%ae')}/pwned.txt",
    # Unicode compatibility forms (NFKC): fullwidth dots and solidus.
    "fullwidth-dots": lambda s: (
        f"{s.prefix}/{s.up.replace('.', FW_DOT).replace('/', FW_SLASH)}{FW_SLASH}pwned.txt"
    ),
    # drive letters, storage URIs used as paths.
    "drive-letter": lambda s: "C:/Windows/win.ini",
    "drive-letter-inner": lambda s: f"{s.prefix}/C:/pwned.txt",
    "file-uri": lambda s: f"file://{s.outside}/pwned.txt",
    "s3-uri": lambda s: "s3://bucket/key",
    # non-canonical spellings and the server's reserved temporary names.
    "dot-segment": lambda s: f"{s.prefix}/./keep.txt",
    "empty-segment": lambda s: f"{s.prefix}//keep.txt",
    "trailing-slash": lambda s: f"{s.prefix}/keep.txt/",
    "reserved-temp-prefix": lambda s: f"{s.prefix}/.artifactd-upload-x",
}


# -- the RPCs, called raw -------------------------------------------------------------------


def _upload(cls: type, path: str, data: bytes = PAYLOAD) -> list:  # type: ignore[type-arg]
    return [
        cls(
            header=pb.UploadHeader(path=path, size=len(data)),
            data=data,
            finish=pb.UploadFinish(sha256=hashlib.sha256(data).hexdigest()),
        )
    ]


def call_log_artifact(stub: Stub, path: str) -> object:
    return stub.LogArtifact(iter(_upload(pb.LogArtifactRequest, path)), timeout=TIMEOUT)


def call_download_artifact(stub: Stub, path: str) -> object:
    return list(stub.DownloadArtifact(pb.DownloadArtifactRequest(path=path), timeout=TIMEOUT))


def call_download_artifacts(stub: Stub, path: str) -> object:
    return list(stub.DownloadArtifacts(pb.DownloadArtifactsRequest(path=path), timeout=TIMEOUT))


def call_list_artifacts(stub: Stub, path: str) -> object:
    return stub.ListArtifacts(pb.ListArtifactsRequest(path=path), timeout=TIMEOUT)


def call_list_artifacts_recursive(stub: Stub, path: str) -> object:
    return stub.ListArtifacts(pb.ListArtifactsRequest(path=path, recursive=True), timeout=TIMEOUT)


def call_get_artifact(stub: Stub, path: str) -> object:
    return stub.GetArtifact(pb.GetArtifactRequest(path=path), timeout=TIMEOUT)


def call_delete_artifacts(stub: Stub, path: str) -> object:
    return stub.DeleteArtifacts(pb.DeleteArtifactsRequest(path=path), timeout=TIMEOUT)


CALLS: dict[str, Callable[[Stub, str], object]] = {
    "LogArtifact": call_log_artifact,
    "DownloadArtifact": call_download_artifact,
    "DownloadArtifacts": call_download_artifacts,
    "ListArtifacts": call_list_artifacts,
    "ListArtifacts-recursive": call_list_artifacts_recursive,
    "GetArtifact": call_get_artifact,
    "DeleteArtifacts": call_delete_artifacts,
}


def log_artifacts(stub: Stub, paths: list[str], data: bytes = PAYLOAD) -> pb.LogArtifactsResponse:
    messages = [m for path in paths for m in _upload(pb.LogArtifactsRequest, path, data)]
    return stub.LogArtifacts(iter(messages), timeout=TIMEOUT)


def expect_status(call: Callable[[], object], code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() == code, error.details()  # type: ignore[attr-defined]
    return error


# -- server side: every attack on every RPC -------------------------------------------------


@pytest.mark.parametrize("rpc", list(CALLS))
@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_invalid_argument_and_touches_nothing(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path, attack: str, rpc: str
) -> None:
    scene = Scene.make(server, prefix, tmp_path)
    path = ATTACKS[attack](scene)
    error = expect_status(lambda: CALLS[rpc](stub, path), grpc.StatusCode.INVALID_ARGUMENT)
    assert "path" in error.details()  # type: ignore[attr-defined]
    scene.assert_untouched()


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_in_log_artifacts_fails_only_that_file(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path, attack: str
) -> None:
    """GHSA-5p3h-7fwh-92rc (file write outside the root), in the batched upload."""
    scene = Scene.make(server, prefix, tmp_path)
    path = ATTACKS[attack](scene)
    response = log_artifacts(stub, [f"{prefix}/before.txt", path, f"{prefix}/after.txt"])
    codes = [(r.path, r.code) for r in response.results]
    assert codes == [
        (f"{prefix}/before.txt", 0),
        (path, grpc.StatusCode.INVALID_ARGUMENT.value[0]),
        (f"{prefix}/after.txt", 0),
    ]
    assert response.results[1].message
    assert not response.results[1].HasField("file")
    scene.assert_untouched(**{"before.txt": PAYLOAD, "after.txt": PAYLOAD})


@pytest.mark.parametrize(
    "rpc", ["LogArtifact", "DownloadArtifact", "DeleteArtifacts"], ids=lambda r: f"{r}-empty"
)
def test_empty_path_refused_where_a_file_is_required(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path, rpc: str
) -> None:
    scene = Scene.make(server, prefix, tmp_path)
    expect_status(lambda: CALLS[rpc](stub, ""), grpc.StatusCode.INVALID_ARGUMENT)
    scene.assert_untouched()


def test_empty_path_in_log_artifacts_fails_only_that_file(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    scene = Scene.make(server, prefix, tmp_path)
    response = log_artifacts(stub, ["", f"{prefix}/after.txt"])
    assert [(r.path, r.code) for r in response.results] == [
        ("", grpc.StatusCode.INVALID_ARGUMENT.value[0]),
        (f"{prefix}/after.txt", 0),
    ]
    scene.assert_untouched(**{"after.txt": PAYLOAD})


@pytest.mark.parametrize("spelling", ["", "/", ".", "./", "%2e", "%2f", FW_DOT, "//", "%252e"])
def test_delete_of_the_root_is_refused(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path, spelling: str
) -> None:
    scene = Scene.make(server, prefix, tmp_path)
    expect_status(lambda: call_delete_artifacts(stub, spelling), grpc.StatusCode.INVALID_ARGUMENT)
    assert scene.root.is_dir()
    scene.assert_untouched()


def test_root_is_still_addressable_where_a_directory_makes_sense(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    """The counterpart of the refusals above: `""` is the root for stat and listing."""
    scene = Scene.make(server, prefix, tmp_path)
    assert call_get_artifact(stub, "").file.is_dir  # type: ignore[attr-defined]
    listed = call_list_artifacts(stub, "")
    assert prefix in [f.path for f in listed.files]  # type: ignore[attr-defined]
    scene.assert_untouched()


def _token(body: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "after",
    [
        pytest.param("{p}/../..", id="dotdot"),
        pytest.param("{p}/%2e%2e", id="encoded-dotdot"),
        pytest.param("/etc", id="absolute"),
        pytest.param("other", id="outside-the-listing"),
    ],
)
def test_forged_page_token_with_a_bad_path_is_refused(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path, after: str
) -> None:
    scene = Scene.make(server, prefix, tmp_path)
    token = _token({"v": 1, "d": prefix, "r": False, "a": after.format(p=prefix)})
    request = pb.ListArtifactsRequest(path=prefix, page_token=token)
    expect_status(
        lambda: stub.ListArtifacts(request, timeout=TIMEOUT), grpc.StatusCode.INVALID_ARGUMENT
    )
    scene.assert_untouched()


def test_fullwidth_percent_escapes_are_refused_by_the_server(
    stub: Stub, server: ServerProcess, prefix: str, tmp_path: Path
) -> None:
    """Fullwidth `%2e%2e` is `%2e%2e` after NFKC, which percent-decodes to `..`."""
    scene = Scene.make(server, prefix, tmp_path)
    dotdot = FW_ENCODED_DOT * 2
    path = f"{prefix}/{dotdot}{FW_SLASH}{dotdot}{FW_SLASH}keep.txt"
    expect_status(lambda: call_get_artifact(stub, path), grpc.StatusCode.INVALID_ARGUMENT)
    scene.assert_untouched()


# -- server side: a symlink inside the root that leads out of it -----------------------------


@pytest.fixture
def linked(server: ServerProcess, prefix: str, tmp_path: Path) -> Iterator[Scene]:
    """`<prefix>/evil` -> the outside directory, `<prefix>/evil-file` -> the outside sentinel."""
    scene = Scene.make(server, prefix, tmp_path)
    links = [scene.root / prefix / "evil", scene.root / prefix / "evil-file"]
    links[0].symlink_to(scene.outside, target_is_directory=True)
    links[1].symlink_to(scene.outside / "pwned.txt")
    scene.before = scene.snapshot()
    yield scene
    for link in links:  # no link out of the shared root outlives the test
        if link.is_symlink():
            link.unlink()


@pytest.mark.parametrize(
    ("rpc", "tail"),
    [
        ("GetArtifact", "evil"),
        ("GetArtifact", "evil/pwned.txt"),
        ("GetArtifact", "evil-file"),
        ("DownloadArtifact", "evil/pwned.txt"),
        ("DownloadArtifact", "evil/dir/inner.txt"),
        ("DownloadArtifact", "evil-file"),
        ("DownloadArtifacts", "evil"),
        ("DownloadArtifacts", "evil/dir"),
        ("ListArtifacts", "evil"),
        ("ListArtifacts-recursive", "evil"),
        ("ListArtifacts", "evil/dir"),
    ],
)
def test_reading_through_an_escaping_symlink_is_permission_denied(
    stub: Stub, linked: Scene, rpc: str, tail: str
) -> None:
    error = expect_status(
        lambda: CALLS[rpc](stub, f"{linked.prefix}/{tail}"), grpc.StatusCode.PERMISSION_DENIED
    )
    assert SENTINEL.decode() not in error.details()  # type: ignore[attr-defined]
    linked.assert_untouched()


def test_listing_skips_an_escaping_symlink(stub: Stub, linked: Scene) -> None:
    for recursive in (False, True):
        request = pb.ListArtifactsRequest(path=linked.prefix, recursive=recursive)
        listed = stub.ListArtifacts(request, timeout=TIMEOUT)
        assert [f.path for f in listed.files] == [f"{linked.prefix}/keep.txt"]
    linked.assert_untouched()


def test_directory_download_skips_an_escaping_symlink(stub: Stub, linked: Scene) -> None:
    for root in (linked.prefix, ""):
        messages = call_download_artifacts(stub, root)
        paths = [m.file.path for m in messages if m.HasField("file")]  # type: ignore[attr-defined]
        data = b"".join(m.data for m in messages)  # type: ignore[attr-defined]
        assert f"{linked.prefix}/keep.txt" in paths
        assert not [p for p in paths if p.startswith(f"{linked.prefix}/evil")]
        assert SENTINEL not in data
    linked.assert_untouched()


@pytest.mark.parametrize("size", [10, PRECHECKED_FROM])
@pytest.mark.parametrize(
    "overwrite", [pb.OVERWRITE_POLICY_OVERWRITE, pb.OVERWRITE_POLICY_FAIL_IF_EXISTS]
)
def test_a_file_cannot_replace_a_symlinked_directory_whatever_its_size(
    stub: Stub, server: ServerProcess, prefix: str, size: int, overwrite: int
) -> None:
    """A symlink to a directory lists as a directory, so an upload there is refused as one:
    a large upload before its bytes, a small one at the publish (which a plain rename would
    have let replace the link)."""
    base = Path(os.path.realpath(server.root)) / prefix
    (base / "data").mkdir(parents=True)
    (base / "data" / "a.txt").write_bytes(b"kept")
    (base / "link-dir").symlink_to(base / "data", target_is_directory=True)

    def messages() -> Iterator[pb.LogArtifactRequest]:
        header = pb.UploadHeader(path=f"{prefix}/link-dir", size=size, overwrite=overwrite)
        yield pb.LogArtifactRequest(header=header)
        for start in range(0, size, 1 << 20):
            yield pb.LogArtifactRequest(data=b"x" * min(1 << 20, size - start))
        yield pb.LogArtifactRequest(finish=pb.UploadFinish())

    error = expect_status(
        lambda: stub.LogArtifact(messages(), timeout=TIMEOUT), grpc.StatusCode.FAILED_PRECONDITION
    )
    assert "is a directory" in error.details()  # type: ignore[attr-defined]
    assert (base / "link-dir").is_symlink()
    assert sorted(p.name for p in base.iterdir()) == ["data", "link-dir"]
    assert [p.name for p in (base / "data").iterdir()] == ["a.txt"]


def test_a_symlink_within_the_root_is_listed_as_its_target_and_never_descended(
    stub: Stub, server: ServerProcess, prefix: str
) -> None:
    """The walk resolves only entries that are symlinks (the rest are real where they stand):
    a link to a file inside the root lists as that file, a link to a directory as a directory
    the walk does not enter (it could loop back on itself), and a download reads through the
    file link."""
    base = Path(os.path.realpath(server.root)) / prefix
    (base / "data" / "deeper").mkdir(parents=True)
    (base / "data" / "a.txt").write_bytes(b"twelve bytes")
    (base / "data" / "deeper" / "b.txt").write_bytes(b"b")
    (base / "link-file").symlink_to(base / "data" / "a.txt")
    (base / "link-dir").symlink_to(base / "data", target_is_directory=True)
    listed = stub.ListArtifacts(
        pb.ListArtifactsRequest(path=prefix, recursive=True), timeout=TIMEOUT
    )
    assert [(f.path.removeprefix(f"{prefix}/"), f.is_dir, f.file_size) for f in listed.files] == [
        ("data", True, 0),
        ("data/a.txt", False, 12),
        ("data/deeper", True, 0),
        ("data/deeper/b.txt", False, 1),
        ("link-dir", True, 0),
        ("link-file", False, 12),
    ]
    request = pb.DownloadArtifactRequest(path=f"{prefix}/link-file")
    messages = list(stub.DownloadArtifact(request, timeout=TIMEOUT))
    assert b"".join(m.data for m in messages) == b"twelve bytes"


@pytest.mark.parametrize(
    "tail",
    [
        "evil/new.txt",
        "evil/pwned.txt",
        "evil/dir/inner.txt",
        "evil/dir/new.txt",
        "evil/sub/new.txt",
        "evil/sub/deeper/new.txt",
    ],
)
def test_writing_through_an_escaping_symlink_is_permission_denied(
    stub: Stub, linked: Scene, tail: str
) -> None:
    expect_status(
        lambda: call_log_artifact(stub, f"{linked.prefix}/{tail}"),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    linked.assert_untouched()


def test_writing_through_an_escaping_symlink_in_log_artifacts(stub: Stub, linked: Scene) -> None:
    p = linked.prefix
    response = log_artifacts(stub, [f"{p}/evil/new.txt", f"{p}/evil/sub/x.txt", f"{p}/ok.txt"])
    assert [(r.path, r.code) for r in response.results] == [
        (f"{p}/evil/new.txt", grpc.StatusCode.PERMISSION_DENIED.value[0]),
        (f"{p}/evil/sub/x.txt", grpc.StatusCode.PERMISSION_DENIED.value[0]),
        (f"{p}/ok.txt", 0),
    ]
    linked.assert_untouched(**{"ok.txt": PAYLOAD})


def test_uploading_onto_a_file_symlink_never_writes_its_target(stub: Stub, linked: Scene) -> None:
    """Either refused, or the link itself is replaced by a regular file inside the root."""
    path = f"{linked.prefix}/evil-file"
    try:
        call_log_artifact(stub, path)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED, error.details()  # type: ignore[attr-defined]
        linked.assert_untouched()
    else:
        stored = linked.root / linked.prefix / "evil-file"
        assert not stored.is_symlink()
        assert stored.read_bytes() == PAYLOAD
        linked.assert_untouched(**{"evil-file": PAYLOAD})


@pytest.mark.parametrize("tail", ["evil/pwned.txt", "evil/dir", "evil/dir/inner.txt", "evil/x"])
def test_deleting_through_an_escaping_symlink_is_permission_denied(
    stub: Stub, linked: Scene, tail: str
) -> None:
    expect_status(
        lambda: call_delete_artifacts(stub, f"{linked.prefix}/{tail}"),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    linked.assert_untouched()


@pytest.mark.parametrize("link", ["evil", "evil-file"])
def test_deleting_an_escaping_symlink_removes_only_the_link(
    stub: Stub, linked: Scene, link: str
) -> None:
    response = call_delete_artifacts(stub, f"{linked.prefix}/{link}")
    assert response.existed  # type: ignore[attr-defined]
    assert not os.path.lexists(linked.root / linked.prefix / link)
    expected = dict(linked.before)
    expected["prefix"] = {k: v for k, v in linked.before["prefix"].items() if k != link}  # type: ignore[attr-defined]
    assert linked.snapshot() == expected
    assert (linked.outside / "pwned.txt").read_bytes() == SENTINEL


def test_deleting_a_directory_holding_an_escaping_symlink_spares_the_target(
    stub: Stub, linked: Scene
) -> None:
    assert call_delete_artifacts(stub, linked.prefix).existed  # type: ignore[attr-defined]
    assert not os.path.lexists(linked.root / linked.prefix)
    assert tree(linked.outside) == linked.before["outside"]


# -- client side: a malicious server (CVE-2024-0520) -----------------------------------------


def _info(path: str, data: bytes | None) -> pb.FileInfo:
    if data is None:
        return pb.FileInfo(path=path, is_dir=True)
    return pb.FileInfo(
        path=path, file_size=len(data), sha256=hashlib.sha256(data).hexdigest(), is_dir=False
    )


class MaliciousService(pb_grpc.ArtifactServiceServicer):
    """Answers with whatever `entries` says: (path, data), data None for a directory."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, bytes | None]] = []
        self.requested_is_dir = True

    def GetArtifact(  # noqa: N802
        self, request: pb.GetArtifactRequest, context: object
    ) -> pb.GetArtifactResponse:
        return pb.GetArtifactResponse(
            file=pb.FileInfo(path=request.path, is_dir=self.requested_is_dir)
        )

    def ListArtifacts(  # noqa: N802
        self, request: pb.ListArtifactsRequest, context: object
    ) -> pb.ListArtifactsResponse:
        return pb.ListArtifactsResponse(files=[_info(p, d) for p, d in self.entries])

    def DownloadArtifacts(  # noqa: N802
        self, request: pb.DownloadArtifactsRequest, context: object
    ) -> Iterator[pb.DownloadArtifactsResponse]:
        for path, data in self.entries:
            yield pb.DownloadArtifactsResponse(file=_info(path, data), data=data or b"")

    def DownloadArtifact(  # noqa: N802
        self, request: pb.DownloadArtifactRequest, context: object
    ) -> Iterator[pb.DownloadArtifactResponse]:
        path, data = self.entries[0]
        yield pb.DownloadArtifactResponse(info=_info(path, data), data=data or b"")


@dataclass
class Fake:
    service: MaliciousService
    client: ArtifactClient


@pytest.fixture
def fake() -> Iterator[Fake]:
    service = MaliciousService()
    grpc_server = grpc.server(ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ArtifactServiceServicer_to_server(service, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    grpc_server.start()
    settings = ClientSettings(transfer_timeout=TIMEOUT, rpc_timeout=TIMEOUT, max_retries=0)
    client = ArtifactClient(f"127.0.0.1:{port}", settings=settings)
    try:
        yield Fake(service, client)
    finally:
        client.close()
        grpc_server.stop(grace=None).wait()


def entries_outside(root: Path, allowed: Path) -> list[str]:
    """Every entry under `root` that is neither `allowed`, inside it, nor one of its parents."""
    return sorted(
        rel
        for rel in tree(root)
        if not (root / rel == allowed or (root / rel).is_relative_to(allowed))
        and not allowed.is_relative_to(root / rel)
    )


ESCAPING = [
    pytest.param("../../escape.txt", id="dotdot"),
    pytest.param("sub/../../escape.txt", id="dotdot-after-requested"),
    pytest.param("sub/../../../escape.txt", id="dotdot-out-of-tmp"),
    pytest.param("/etc/x", id="absolute"),
    pytest.param("{tmp}/escape.txt", id="absolute-into-tmp"),
    pytest.param("other/outside.txt", id="not-under-requested"),
    pytest.param("subother/x.txt", id="string-prefix-sibling"),
    pytest.param("escape.txt", id="above-requested"),
    pytest.param("sub\\..\\..\\escape.txt", id="backslash"),
    pytest.param("sub/%2e%2e/%2e%2e/escape.txt", id="encoded-dotdot"),
    pytest.param(
        f"sub/{FW_ENCODED_DOT * 2}/{FW_ENCODED_DOT * 2}/escape.txt", id="fullwidth-percent"
    ),
    pytest.param(f"sub/{FW_DOT * 2}/{FW_DOT * 2}/escape.txt", id="fullwidth-dots"),
    pytest.param("sub/.artifactd-upload-x", id="reserved-temp-name"),
    pytest.param("sub/C:/escape.txt", id="drive-letter"),
    pytest.param("", id="root-as-a-file"),
]


@pytest.fixture
def dst(tmp_path: Path) -> Path:
    """`<tmp>/a/dst`: `../../escape.txt` from it is `<tmp>/escape.txt`."""
    path = tmp_path / "a" / "dst"
    path.mkdir(parents=True)
    return path


def test_malicious_server_control_case_is_downloaded(fake: Fake, dst: Path) -> None:
    """The fake server works: a legitimate answer is downloaded where it belongs."""
    fake.service.entries = [("sub/d", None), ("sub/d/ok.txt", b"fine")]
    local = fake.client.download_artifacts("sub", dst)
    assert Path(local) == dst / "sub"
    assert (dst / "sub" / "d" / "ok.txt").read_bytes() == b"fine"
    assert [i.path for i in fake.client.list_artifacts("sub")] == ["sub/d", "sub/d/ok.txt"]


@pytest.mark.parametrize("returned", ESCAPING)
@pytest.mark.parametrize("as_dir", [False, True], ids=["file", "dir"])
def test_malicious_server_paths_do_not_escape_the_download(
    fake: Fake, tmp_path: Path, dst: Path, returned: str, as_dir: bool
) -> None:
    path = returned.format(tmp=tmp_path)
    fake.service.entries = [(path, None if as_dir else b"escaped\n")]
    with pytest.raises(ArtifactError):
        fake.client.download_artifacts("sub", dst)
    assert entries_outside(tmp_path, dst / "sub") == []
    assert [str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()] == []


@pytest.mark.parametrize("returned", ESCAPING)
def test_malicious_server_paths_are_refused_by_listing(
    fake: Fake, tmp_path: Path, returned: str
) -> None:
    fake.service.entries = [("sub/fine.txt", b"x"), (returned.format(tmp=tmp_path), b"x")]
    for recursive in (False, True):
        with pytest.raises(ArtifactError):
            fake.client.list_artifacts("sub", recursive=recursive)


@pytest.mark.parametrize("returned", ESCAPING)
def test_malicious_server_info_is_refused_for_a_file_download(
    fake: Fake, tmp_path: Path, dst: Path, returned: str
) -> None:
    fake.service.requested_is_dir = False
    fake.service.entries = [(returned.format(tmp=tmp_path), b"escaped\n")]
    with pytest.raises(ArtifactError):
        fake.client.download_artifacts("sub/model.bin", dst)
    assert entries_outside(tmp_path, dst / "sub") == []
    assert [p for p in dst.rglob("*") if p.is_file()] == []


@pytest.fixture
def dst_with_link(tmp_path: Path, dst: Path) -> Path:
    """`dst/sub/link` -> `<tmp>/outside`, an empty directory outside the destination."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (dst / "sub").mkdir()
    (dst / "sub" / "link").symlink_to(outside, target_is_directory=True)
    return outside


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param([("sub/link/x.txt", b"escaped\n")], id="file-in-link"),
        pytest.param([("sub/link/deep/x.txt", b"escaped\n")], id="file-below-link"),
        pytest.param([("sub/link/deep/er/x.txt", b"escaped\n")], id="file-two-below-link"),
        pytest.param([("sub/link/newdir", None)], id="dir-in-link"),
        pytest.param([("sub/link/a/b", None)], id="dir-below-link"),
        pytest.param([("sub/link", None), ("sub/link/x.txt", b"escaped\n")], id="dir-then-file"),
    ],
)
def test_symlink_in_dst_is_not_followed_out_of_it(
    fake: Fake, dst: Path, dst_with_link: Path, entries: list[tuple[str, bytes | None]]
) -> None:
    fake.service.entries = entries
    with pytest.raises(ArtifactError):
        fake.client.download_artifacts("sub", dst)
    assert tree(dst_with_link) == {}


def test_symlink_in_dst_is_not_followed_for_a_file_download(
    fake: Fake, dst: Path, dst_with_link: Path
) -> None:
    fake.service.requested_is_dir = False
    fake.service.entries = [("sub/link/x.txt", b"escaped\n")]
    with pytest.raises(ArtifactError):
        fake.client.download_artifacts("sub/link/x.txt", dst)
    assert tree(dst_with_link) == {}


def test_symlink_in_dst_with_the_real_server(
    client: ArtifactClient, prefix: str, tmp_path: Path
) -> None:
    """A legitimate server and legitimate paths: only the local symlink is the attack."""
    source = tmp_path / "source"
    (source / "link" / "deep").mkdir(parents=True)
    (source / "link" / "x.txt").write_bytes(b"one")
    (source / "link" / "deep" / "y.txt").write_bytes(b"two")
    client.log_artifacts(source, prefix)
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "dst"
    (dst / prefix).mkdir(parents=True)
    (dst / prefix / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ArtifactError):
        client.download_artifacts(prefix, dst)
    with pytest.raises(ArtifactError):
        client.download_artifacts(f"{prefix}/link/x.txt", dst)
    with pytest.raises(ArtifactError):
        client.download_artifacts(f"{prefix}/link/deep/y.txt", dst)
    assert tree(outside) == {}
