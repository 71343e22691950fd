"""Where an artifact is: which server, which path. Resolved from what the user typed only.

Storage locations and credentials belong to the server. MLflow clients read variables such as
`MLFLOW_S3_ENDPOINT_URL` and can end up writing to `s3://bucket/key/bucket/key` or to their own
disk; this client never reads them. When one is set it says so once (or raises in strict mode),
so a user who expected it to matter learns that it does not.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import warnings
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from artifactd.protocol import environment
from artifactd.protocol.errors import InvalidArgument
from artifactd.protocol.ids import check_run_id
from artifactd.protocol.paths import ROOT, ArtifactPath, parse

DEFAULT_TARGET = environment.SERVER.default
DEFAULT_PORT = 50051
URI_SCHEMES = ("artifactd", "mlflow-artifacts")
RUNS_SCHEME = "runs"

RESERVED_STORAGE_VARIABLES = tuple(variable.name for variable in environment.RESERVED_STORAGE)
"""Storage variables that change *where* artifacts go when an MLflow client reads them
(`environment.RESERVED_STORAGE` says why these and not credentials)."""

STRICT_ENV_VARIABLE = environment.STRICT_ENV.name

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
GRPC_SCHEMES = ("dns", "ipv4", "ipv6", "unix", "unix-abstract")
"""Target URIs handed to gRPC as they are: its own resolvers (a DNS name with one address per
replica, fixed address lists, unix sockets)."""
BALANCED_SCHEMES = ("dns", "ipv4", "ipv6")
_TARGET_FORMS = (
    "expected HOST:PORT, a list 10.0.0.1:50051,10.0.0.2:50051, or a gRPC target URI "
    "(dns:///NAME:PORT, ipv4:ADDR:PORT,ADDR:PORT, ipv6:[ADDR]:PORT, unix:PATH)"
)
_warned: set[str] = set()
_warned_lock = threading.Lock()


class ReservedStorageVariableWarning(UserWarning):
    """A storage variable is set on the client, where artifactd ignores it."""


class ReservedStorageVariableError(InvalidArgument):
    """Strict mode: a storage variable is set on the client."""


@dataclass(frozen=True)
class Location:
    """An artifact path, the server named with it when it came as a URI, and the run it is in.

    With a `run_id`, `path` is relative to that run's artifact root.
    """

    target: str | None
    path: ArtifactPath
    run_id: str | None = None

    def __str__(self) -> str:
        if self.run_id is None:
            return str(self.path)
        return f"runs:/{self.run_id}/{self.path}" if self.path.parts else f"runs:/{self.run_id}"


@dataclass(frozen=True)
class ServerTarget:
    """Where a client connects: the server as the user wrote it (normalized) and gRPC's target.

    A list `HOST:PORT,HOST:PORT` of replicas becomes gRPC's own address-list target
    (`ipv4:a:p,b:p`), so gRPC's `round_robin` policy spreads calls over the replicas and leaves
    out the ones it cannot reach; no balancing is done here (see `rpc.service_config`).
    """

    text: str
    """The servers as written, spaces dropped: what error messages and upload records name."""
    channel: str
    """The target handed to gRPC."""
    balanced: bool
    """Several servers (a list, or a resolver that may return several addresses): each one's
    health is watched and a replica that reports NOT_SERVING (draining) gets no new calls. A
    plain HOST:PORT is not watched: it may be a proxy, whose one health stream would speak for
    one server behind it only."""


def server_target(text: str, source: str = "server") -> ServerTarget:
    """Checks and translates a server as the user gave it (`--server`, `ARTIFACTD_SERVER`, the
    authority of an `artifactd://` URI); `source` names where it came from in the one-line
    InvalidArgument that a malformed one raises."""
    raw = text.strip()
    shown = f"{source} {text!r}"
    if not raw:
        raise InvalidArgument(f"{shown} is empty; {_TARGET_FORMS}")
    match = _SCHEME.match(raw)
    scheme = match.group(1).lower() if match else ""
    if scheme in GRPC_SCHEMES:
        return _grpc_uri(raw, scheme, shown)
    if "://" in raw:
        raise InvalidArgument(f"{shown}: {scheme}:// is not a gRPC target; {_TARGET_FORMS}")
    items = [item.strip() for item in raw.split(",")]
    if len(items) == 1:
        host, port = _host_port(items[0], shown)
        return ServerTarget(_join(host, port), _join(host, port), balanced=False)
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    written: list[str] = []
    for item in items:
        host, port = _host_port(item, shown)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise InvalidArgument(
                f"{shown}: {host!r} is a host name, but a list of servers takes IP addresses; "
                f"for names, give one DNS name that resolves to every replica: dns:///NAME:{port}"
            ) from None
        addresses.append(address)
        written.append(_join(str(address), port))
    if len({address.version for address in addresses}) > 1:
        raise InvalidArgument(f"{shown} mixes IPv4 and IPv6 addresses; give one kind")
    family = f"ipv{addresses[0].version}"
    return ServerTarget(",".join(written), f"{family}:{','.join(written)}", balanced=True)


def _grpc_uri(raw: str, scheme: str, shown: str) -> ServerTarget:
    """A target URI gRPC resolves itself, checked here so that a typo is one clear line rather
    than a channel that never connects."""
    rest = raw[len(scheme) + 1 :]
    if scheme in ("unix", "unix-abstract"):
        if not rest.strip("/"):
            raise InvalidArgument(f"{shown} names no socket; {_TARGET_FORMS}")
        return ServerTarget(raw, raw, balanced=False)
    if scheme == "dns":
        name = rest[2:].partition("/")[2] if rest.startswith("//") else rest
        _host_port(name, shown)
        return ServerTarget(raw, raw, balanced=True)
    version = 4 if scheme == "ipv4" else 6
    for item in rest.split(","):
        host, _ = _host_port(item, shown)
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            address = None
        if address is None or address.version != version:
            raise InvalidArgument(f"{shown}: {host!r} is not an IPv{version} address")
    return ServerTarget(raw, raw, balanced=True)


def _host_port(item: str, shown: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT` or `[IPV6]:PORT`; the port is required (gRPC would pick 443)."""
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d+)", item)
    plain = re.fullmatch(r"([A-Za-z0-9._-]+):(\d+)", item)
    found = bracketed or plain
    if found is None:
        raise InvalidArgument(f"{shown}: {item!r} is not HOST:PORT; {_TARGET_FORMS}")
    host, port = found.group(1), int(found.group(2))
    if not 1 <= port <= 65535:
        raise InvalidArgument(f"{shown}: {item!r} needs a port from 1 to 65535")
    return host, port


def _join(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def in_run(location: Location, run_id: str | None) -> Location:
    """`location` inside run `run_id` (when given); a `runs:/` URI naming another run is refused."""
    if run_id is None:
        return location
    check_run_id(run_id)
    if location.run_id is not None and location.run_id != run_id:
        raise InvalidArgument(
            f"{location} names run {location.run_id}, but run id {run_id} was also given; "
            "pass one of them"
        )
    return replace(location, run_id=run_id)


def strict_from_env() -> bool:
    return (environment.STRICT_ENV.get() or "").strip().lower() in ("1", "true", "yes", "on")


def guard_environment(strict: bool, stacklevel: int = 3) -> None:
    """Warns once per variable (or raises, when strict) about storage variables on the client.

    `stacklevel` is that of the warning: the default points at the caller's caller (the line
    that made the client, when a client's `__init__` calls this).
    """
    present = [variable.name for variable in environment.RESERVED_STORAGE if variable.get()]
    if not present:
        return
    names = ", ".join(present)
    message = (
        f"{names} {'is' if len(present) == 1 else 'are'} set in this client's environment, but "
        "artifactd ignores client-side storage settings: the server alone decides where "
        "artifacts are stored and holds the storage credentials, so artifact paths are never "
        "rewritten by them"
    )
    if strict:
        raise ReservedStorageVariableError(f"{message} (strict mode: unset them)")
    with _warned_lock:
        fresh = [name for name in present if name not in _warned]
        _warned.update(fresh)
    if fresh:
        warnings.warn(message, ReservedStorageVariableWarning, stacklevel=stacklevel)


def resolve(location: str | None, *, allow_root: bool = True) -> Location:
    """Parses a plain artifact path or an `artifactd://host:port/path` URI.

    `mlflow-artifacts://host:port/path` is accepted with the same meaning (and
    `mlflow-artifacts:/path` without a server). `runs:/<run_id>/<path>` names a path relative to a
    run's artifact root, on the configured server (it names none). Storage URIs (`s3://`,
    `file://`, ...) are refused: a client never chooses a storage location.
    """
    if location is None or location == "":
        if not allow_root:
            raise InvalidArgument("an artifact path is required")
        return Location(None, ROOT)
    match = _SCHEME.match(location)
    if match is None or (len(match.group(1)) == 1 and location[2:3] in ("\\", "/")):
        return Location(None, parse(location, allow_root=allow_root))
    scheme = match.group(1).lower()
    if scheme == RUNS_SCHEME:
        return _resolve_run_uri(location, allow_root=allow_root)
    if scheme not in URI_SCHEMES:
        raise InvalidArgument(
            f"{location!r} is a {scheme}:// storage URI; storage locations are configured on "
            "the artifactd server only. Pass an artifact path relative to the server's artifact "
            "root, an artifactd://host:port/path URI or a runs:/<run_id>/<path> URI"
        )
    parts = urlsplit(location)
    if parts.query or parts.fragment or location.endswith(("?", "#")):
        raise InvalidArgument(f"{location!r}: artifact URIs take no query or fragment")
    target = None
    if parts.netloc:
        if "@" in parts.netloc:
            shown = f"{scheme}://<credentials>@{parts.netloc.rsplit('@', 1)[1]}{parts.path}"
            raise InvalidArgument(f"{shown!r}: credentials do not belong in an artifact URI")
        if "," in parts.netloc:  # replicas: artifactd://10.0.0.1:50051,10.0.0.2:50051/path
            target = server_target(parts.netloc, f"the servers of {location!r}").text
            raw = parts.path[1:] if parts.path.startswith("/") else parts.path
            return Location(target, parse(raw, allow_root=allow_root))
        try:
            port = DEFAULT_PORT if parts.port is None else parts.port
        except ValueError:
            raise InvalidArgument(f"{location!r} has an invalid port") from None
        host = parts.hostname or ""
        if not host or port == 0:
            raise InvalidArgument(f"{location!r} needs a host and a port from 1 to 65535")
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    raw = parts.path[1:] if parts.path.startswith("/") else parts.path
    return Location(target, parse(raw, allow_root=allow_root))


def server_uri(uri: str, scheme: str = "artifactd") -> Location:
    """The server and path of an `artifactd://host:port/<path>` URI: the form the MLflow
    plugin's artifact URIs and the fsspec filesystem's URLs take (`artifactd:/<path>` or
    `artifactd:///<path>`: the configured server). Trailing slashes are tolerated (MLflow joins
    URIs with one at times); anything but this scheme is refused."""
    if uri.partition(":")[0].lower() != scheme or not uri.partition(":")[2]:
        raise InvalidArgument(
            f"{uri!r} is not an {scheme} URI: expected {scheme}://host:port/<path>"
        )
    while uri.endswith("/") and not uri.endswith("://"):
        uri = uri[:-1]
    return resolve(uri)


def _resolve_run_uri(location: str, *, allow_root: bool) -> Location:
    """`runs:/<run_id>/<path>`: MLflow's run-relative URI; the server is the configured one."""
    rest = location[len(RUNS_SCHEME) + 1 :]
    usage = "expected runs:/<run_id>/<path>, with the path relative to the run's artifact root"
    if rest.startswith("//"):
        raise InvalidArgument(
            f"{location!r} names a host, but runs:/ URIs name none (the configured server is "
            f"used); {usage}"
        )
    if not rest.startswith("/"):
        raise InvalidArgument(f"{location!r} is not a runs:/ URI; {usage}")
    if "?" in rest or "#" in rest:
        raise InvalidArgument(f"{location!r}: artifact URIs take no query or fragment")
    run_id, _, raw = rest[1:].partition("/")
    if not run_id:
        raise InvalidArgument(f"{location!r} names no run; {usage}")
    check_run_id(run_id)
    return Location(None, parse(raw, allow_root=allow_root), run_id)
