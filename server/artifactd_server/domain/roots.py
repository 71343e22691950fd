"""The server's artifact roots, and the mapping between location URIs and (root, path).

Experiments and runs record their artifact locations as URIs. The server only ever acts on a URI
that lies inside one of the roots it was configured with: a location is *located* by matching a
root's URI as a prefix at a `/` boundary and parsing the rest with the one path grammar, so a
client-invented location (another host, another bucket, `..`, an encoded traversal) is refused
before any storage is touched. MLflow's LFI and SSRF CVEs came from acting on such locations.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from artifactd.protocol.errors import InvalidArgument, PermissionDenied
from artifactd.protocol.paths import ArtifactPath, InvalidPath, parse
from artifactd_server.storage.base import Storage

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True)
class Location:
    """A place inside one artifact root."""

    storage: Storage
    path: ArtifactPath

    @property
    def uri(self) -> str:
        return uri_of(self.storage, self.path)


def uri_of(storage: Storage, path: ArtifactPath) -> str:
    return storage.uri if path.is_root else f"{storage.uri}/{path}"


class ArtifactRoots:
    """The configured roots; the first is the default for plain paths and new experiments."""

    def __init__(self, storages: Sequence[Storage]) -> None:
        if not storages:
            raise InvalidArgument("at least one artifact root is needed")
        uris = [s.uri for s in storages]
        for index, uri in enumerate(uris):
            for other in uris[index + 1 :]:
                if uri == other or other.startswith(uri + "/") or uri.startswith(other + "/"):
                    raise InvalidArgument(f"artifact roots {uri!r} and {other!r} overlap")
        self.storages = tuple(storages)

    @property
    def default(self) -> Storage:
        return self.storages[0]

    def locate(self, uri: str) -> Location:
        """The root and path of `uri`; `PermissionDenied` when it lies in none of the roots."""
        for storage in self.storages:
            if uri == storage.uri:
                return Location(storage, ArtifactPath(()))
            if uri.startswith(storage.uri + "/"):
                rest = uri[len(storage.uri) + 1 :]
                try:
                    return Location(storage, parse(rest, what="location"))
                except InvalidPath as exc:
                    raise PermissionDenied(f"location {uri!r} is not acceptable: {exc}") from None
        raise PermissionDenied(
            f"location {uri!r} is not inside any of this server's artifact roots "
            f"({', '.join(self.uris)}); the server never acts on other locations"
        )

    @property
    def uris(self) -> tuple[str, ...]:
        return tuple(s.uri for s in self.storages)

    def requested_location(self, text: str) -> Location:
        """Where a caller-chosen experiment location points, refusing what it may not be.

        Accepted: a URI or an absolute local path inside a root, or a relative path under the
        default root. Refused: a root itself (collecting the experiment would empty the root),
        and top-level folders of the default root named by digits only, which are where
        experiments without a chosen location live (`<root>/<id>`).
        """
        if "://" in text:
            uri = text
        elif _SCHEME.match(text):
            raise InvalidArgument(
                f"artifact_location {text!r} looks like a URI without '//' (file:/x, runs:/...); "
                "give scheme:///absolute/path, an absolute path, or a path relative to the root"
            )
        elif text.startswith("/"):
            uri = "file://" + text  # not normalised: `..` and `//` make `locate` refuse it
        else:
            try:
                uri = uri_of(self.default, parse(text, what="artifact_location"))
            except InvalidPath as exc:
                raise InvalidArgument(str(exc), field=exc.field) from None
        location = self.locate(uri)
        if location.path.is_root:
            raise PermissionDenied(
                f"location {text!r} is an artifact root itself; choose a folder inside it"
            )
        if location.storage is self.default and location.path.parts[0].isdigit():
            raise PermissionDenied(
                f"location {text!r}: top-level folders named by digits in the default root are "
                "reserved for experiments' default locations; choose another name"
            )
        return location
