"""The one grammar every artifact path must satisfy, on the server and in the client.

MLflow's path CVEs were each a bypass of a string filter (backslashes, `#`, `;`, double
percent-encoding, `//host`, drive letters). Here a path is *parsed* once into an `ArtifactPath`,
and code that holds an `ArtifactPath` never re-checks it: the type is the proof that it is a
relative, `/`-separated path with no empty, `.` or `..` segment and nothing that turns into one
after percent-decoding or Unicode compatibility normalisation.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

from artifactd.protocol.errors import InvalidArgument, excerpt

MAX_PATH_BYTES = 1024
"""Longest accepted path in UTF-8 bytes (MLflow caps artifact locations at 2048 characters)."""
MAX_SEGMENT_BYTES = 255
"""Longest segment: the file-name limit of ext4, XFS and most object stores' keys per level."""
MAX_DEPTH = 128
RESERVED_PREFIX = ".artifactd-"
"""Segments starting with this are the server's (temporary upload files) and never user paths."""

_MAX_DECODE_ROUNDS = 7
_FORBIDDEN_CHARS = frozenset("\\#;?")
# Bidirectional overrides and isolates can make a listed name read differently from what it is;
# line and paragraph separators break line-oriented tools; the BOM is invisible.
_INVISIBLE = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029\ufeff"
)
_DRIVE = re.compile(r"^[A-Za-z]:")
_PLAIN_ASCII_EXCEPTIONS = re.compile(r"[\x00-\x1f\x7f\\#;?%]")
"""In an ASCII path, the characters that make it more than its own one reading (`%`) or that
the grammar refuses (controls, \\ # ; ?)."""
_FIELD = re.compile(r"[a-z][a-z0-9_]*")


class InvalidPath(InvalidArgument):
    """A path that breaks the grammar; the message says which rule and quotes the path.

    `field` is the request field that held it: `path` unless `parse` was told otherwise.
    """

    def __init__(self, message: str, *, field: str | None = "path") -> None:
        super().__init__(message, field=field)


@dataclass(frozen=True, order=True)
class ArtifactPath:
    """A validated artifact path; `parts` is empty for the root. Build it with `parse`."""

    parts: tuple[str, ...]

    def __str__(self) -> str:
        return "/".join(self.parts)

    @property
    def is_root(self) -> bool:
        return not self.parts

    @property
    def name(self) -> str:
        return self.parts[-1] if self.parts else ""

    @property
    def parent(self) -> ArtifactPath:
        return ArtifactPath(self.parts[:-1])

    def child(self, name: str) -> ArtifactPath:
        """Appends one segment, checked by the same grammar (names come from storage listings)."""
        return parse(f"{self}/{name}" if self.parts else name)

    def is_relative_to(self, other: ArtifactPath) -> bool:
        """Segment-wise prefix test: `foo` contains `foo/x` but never `foobar`."""
        return self.parts[: len(other.parts)] == other.parts

    def relative_to(self, other: ArtifactPath) -> tuple[str, ...]:
        if not self.is_relative_to(other):
            raise ValueError(f"{self} is not under {other}")
        return self.parts[len(other.parts) :]


ROOT = ArtifactPath(())


def parse(path: str, *, allow_root: bool = False, what: str = "path") -> ArtifactPath:
    """Parses `path` or raises `InvalidPath` naming the rule it broke.

    The empty string is the root, accepted only where `allow_root` says a directory makes sense.
    `what` starts the message; its first word, when it is a field name (`page_token`), is the
    error's `field`, else `path`.
    """
    try:
        return _parse(path, allow_root, what)
    except InvalidPath as exc:
        exc.field = _field_of(what)
        raise


def _field_of(what: str) -> str:
    word = what.split(" ", 1)[0]
    return word if _FIELD.fullmatch(word) else "path"


def _parse(path: str, allow_root: bool, what: str) -> ArtifactPath:
    if not isinstance(path, str):
        raise InvalidPath(f"{what} must be a string, got {type(path).__name__}")
    if path == "":
        if allow_root:
            return ROOT
        raise InvalidPath(f"{what} is empty: name a file or directory under the artifact root")
    try:
        size = len(path.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidPath(f"{what} is not valid UTF-8: {excerpt(path)!r}") from None
    if size > MAX_PATH_BYTES:
        raise InvalidPath(f"{what} is {size} bytes long; the limit is {MAX_PATH_BYTES}")
    if size == len(path) and not _PLAIN_ASCII_EXCEPTIONS.search(path):
        # Plain ASCII without '%': percent-decoding and NFKC both leave it as it is, so it is
        # its only reading, and it has no refused character. The common case, checked at a
        # fifth of the cost of the general one (a directory upload parses each file's path).
        _check_segments(path, path, what)
    else:
        check_every_reading(path, what)
    parts = tuple(path.split("/"))
    if len(parts) > MAX_DEPTH:
        raise InvalidPath(f"{what} has {len(parts)} segments; the limit is {MAX_DEPTH}")
    for part in parts:
        if len(part.encode("utf-8")) > MAX_SEGMENT_BYTES:
            raise InvalidPath(f"{what} has a segment longer than {MAX_SEGMENT_BYTES} bytes")
    return ArtifactPath(parts)


def check_every_reading(path: str, what: str = "path") -> None:
    """The general check: every reading of `path` passes the grammar. `parse` takes a shortcut
    for plain ASCII paths, which must agree with this (tests/test_path_properties.py)."""
    for form in _decoded_forms(path, what):
        _check_form(form, path, what)


def _decoded_forms(path: str, what: str) -> list[str]:
    """Every reading of the path: repeated percent-decoding and NFKC, in any order.

    A path is only as safe as the most-decoded reading any component (a proxy, a URL library, a
    Windows client) may apply to it, so every reading must pass the grammar. Decoding and
    normalisation feed each other (a fullwidth `%2e` becomes `%2e` under NFKC, then `.`), hence
    the closure rather than one pass of each.
    """
    forms: list[tuple[str, int]] = [(path, 0)]  # each reading with its percent-decoding depth
    seen = {path}
    index = 0
    while index < len(forms):
        current, depth = forms[index]
        index += 1
        try:
            decoded = unquote(current, errors="strict")
        except UnicodeDecodeError:
            raise InvalidPath(
                f"{what} percent-decodes to invalid UTF-8: {excerpt(path)!r}"
            ) from None
        if decoded != current and depth >= _MAX_DECODE_ROUNDS:
            raise InvalidPath(f"{what} is percent-encoded too many times: {excerpt(path)!r}")
        for reading, reading_depth in (
            (decoded, depth + 1),
            (unicodedata.normalize("NFKC", current), depth),
        ):
            if reading not in seen:
                seen.add(reading)
                forms.append((reading, reading_depth))
    return [form for form, _ in forms]


def _failure(form: str, original: str, what: str, rule: str) -> InvalidPath:
    shown = (
        excerpt(original)
        if form == original
        else f"{excerpt(original)} (read as {excerpt(form)!r})"
    )
    return InvalidPath(f"{what} {rule}: {shown!r}")


def _check_form(form: str, original: str, what: str) -> None:
    for ch in form:
        if ch in _FORBIDDEN_CHARS:
            raise _failure(
                form, original, what,
                f"contains the forbidden character {ch!r} (\\ # ; ? are never allowed)",
            )  # fmt: skip
        if ch in _INVISIBLE or unicodedata.category(ch) == "Cc":
            raise _failure(
                form, original, what,
                f"contains the control or invisible character U+{ord(ch):04X}",
            )  # fmt: skip
    _check_segments(form, original, what)


def _check_segments(form: str, original: str, what: str) -> None:
    def fail(rule: str) -> InvalidPath:
        return _failure(form, original, what, rule)

    if form.startswith("/"):
        raise fail("is absolute; artifact paths are relative to the artifact root")
    for part in form.split("/"):
        if part == "":
            raise fail("has an empty segment (a leading, trailing or doubled '/')")
        if part.strip(".") == "":
            raise fail(f"has the segment {excerpt(part)!r}; '.' and '..' segments are not allowed")
        if _DRIVE.match(part):
            raise fail(f"has a drive-letter segment {excerpt(part)!r}")
        if part.startswith(RESERVED_PREFIX):
            raise fail(f"has a segment with the reserved prefix {RESERVED_PREFIX!r}")


def join(base: ArtifactPath, *relative: str) -> ArtifactPath:
    """`base` extended by relative segments, re-parsed (they may come from local file names)."""
    tail = "/".join(relative)
    if not tail:
        return base
    return parse(f"{base}/{tail}" if base.parts else tail)
