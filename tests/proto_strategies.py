"""Hypothesis strategies for gRPC requests, derived from the protobuf descriptors alone.

The fuzz tests (tests/test_fuzz.py) must cover an RPC added tomorrow without anyone writing a
strategy for it, and must send what no generated client can: invalid UTF-8 in string fields,
out-of-range enum numbers, negative or 64-bit numbers in 32-bit fields, a field repeated where
it is singular, fields of the wrong wire type, unknown fields, truncated messages. So requests
are built as protobuf *wire bytes* from each field's descriptor (type, number, label), not
through the message classes, which refuse most of that; the test sends the bytes as they are.

Strings are drawn from per-field-name hints where the test has them (real run ids, upload
ids, paths that aim outside the root), so calls reach the code behind the argument checks as
well as the checks themselves.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google_crc32c import value as crc32c
from hypothesis import strategies as st

from artifactd_server.api.requests import is_repeated

Bytes = st.SearchStrategy[bytes]

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = range(6)
_T = FieldDescriptor
_VARINT_TYPES = {_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_BOOL,
                 _T.TYPE_ENUM, _T.TYPE_SINT32, _T.TYPE_SINT64}  # fmt: skip
_FIXED32_FORMATS = {_T.TYPE_FIXED32: "<I", _T.TYPE_SFIXED32: "<i", _T.TYPE_FLOAT: "<f"}
_FIXED64_FORMATS = {_T.TYPE_FIXED64: "<Q", _T.TYPE_SFIXED64: "<q", _T.TYPE_DOUBLE: "<d"}

INTEGER_EDGES = (
    0, 1, -1, 2**31 - 1, -(2**31), 2**32 - 1, 2**32, 2**53 + 1, 2**62, 2**63 - 1, -(2**63),
    2**64 - 1,
)  # fmt: skip
"""Values at the edges of 32- and 64-bit fields, signed and unsigned (sent modulo 2**64)."""

INVALID_UTF8 = (
    b"\xff", b"\xc3", b"a\xc3(b", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
    b"fuzz/\xff.bin", b"\xe2\x82",
)  # fmt: skip
"""Not UTF-8: a stray byte, cut and overlong sequences, an encoded surrogate, past U+10FFFF."""

LARGE_SIZES = (4097, 70_000)
"""Past a path's length limit, past a 64 KiB buffer."""
HUGE_SIZE = 1_100_000
"""Past a MiB: only in singular fields near the top, so a request stays below ~20 MB."""
OVERSIZED_BYTES = 2 << 20
"""An oversized repeated field holds at most this much: its count is the point, not its bulk."""

GENERIC_STRINGS = ("", "a", "\x00", "é/ü", "🙂", " ", "\n", "%00", "null", "-1", "0")


@dataclass(frozen=True)
class Rpc:
    """One method of a service, as its descriptor describes it."""

    service: str
    name: str
    input_type: Descriptor
    client_streaming: bool
    server_streaming: bool

    @property
    def path(self) -> str:
        return f"/{self.service}/{self.name}"


def rpcs(*files: FileDescriptor) -> list[Rpc]:
    """Every method of every service the files define."""
    return [
        Rpc(
            service.full_name,
            method.name,
            method.input_type,
            method.client_streaming,
            method.server_streaming,
        )
        for file in files
        for service in file.services_by_name.values()
        for method in service.methods
    ]


@dataclass
class Hints:
    """Strings worth sending in fields of a given name (all of them also get generic ones)."""

    strings: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def for_field(self, name: str) -> Sequence[str]:
        return self.strings.get(name, ())


# -- wire encoding ----------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """`value` as a base-128 varint of its low 64 bits (negative numbers take ten bytes)."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def delimited(number: int, payload: bytes) -> bytes:
    return tag(number, LENGTH_DELIMITED) + varint(len(payload)) + payload


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


# -- values by field type ---------------------------------------------------------------------


def _integers() -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(-4, 4), st.sampled_from(INTEGER_EDGES), st.integers(-(2**63), 2**64 - 1)
    )


def _varint_payload(fd: FieldDescriptor, hostile: bool = True) -> st.SearchStrategy[int]:
    if fd.type == _T.TYPE_ENUM:
        assert fd.enum_type is not None
        defined = sorted(fd.enum_type.values_by_number)
        if not hostile:
            return st.sampled_from(defined)
        undefined = [max(defined) + 1, -1, 99, 2**31 - 1, -(2**31), 2**40]
        return st.one_of(st.sampled_from(defined), st.sampled_from(undefined))
    if fd.type == _T.TYPE_BOOL:
        return st.sampled_from((0, 1, 2, 2**64 - 1))
    if fd.type in (_T.TYPE_SINT32, _T.TYPE_SINT64):
        return _integers().map(lambda v: _zigzag(max(min(v, 2**63 - 1), -(2**63))))
    return _integers()


def _fixed(fmt: str) -> Bytes:
    if fmt in ("<f", "<d"):
        return st.floats(width=32 if fmt == "<f" else 64).map(lambda v: struct.pack(fmt, v))
    size = struct.calcsize(fmt)
    return st.binary(min_size=size, max_size=size)


def strings(name: str, hints: Hints, large: bool, hostile: bool) -> Bytes:
    """A string field's payload: a hint, any text, a long one (`large`: up to a MiB), or
    (`hostile`) bytes that are not UTF-8."""
    known = [*hints.for_field(name), *GENERIC_STRINGS]
    sizes = (*LARGE_SIZES, HUGE_SIZE) if large else LARGE_SIZES
    specific = st.sampled_from(hints.for_field(name) or GENERIC_STRINGS).map(str.encode)
    long_ = st.tuples(st.sampled_from(sizes), st.sampled_from((b"a", b"a/"))).map(
        lambda pair: pair[1] * (pair[0] // len(pair[1]))
    )
    choices = [
        *[specific] * 4,  # most often a value the field's handler can act on
        *[st.sampled_from(known).map(str.encode)] * 2,
        st.text(max_size=40).map(str.encode),
        long_,
    ]
    if hostile:
        choices.append(st.sampled_from(INVALID_UTF8))
        choices.append(
            st.tuples(st.sampled_from(known), st.sampled_from(INVALID_UTF8)).map(
                lambda pair: pair[0].encode() + pair[1]
            )
        )
    return st.one_of(*choices)


def _blobs(large: bool) -> Bytes:
    sizes = (*LARGE_SIZES, HUGE_SIZE) if large else LARGE_SIZES
    return st.one_of(st.binary(max_size=300), st.sampled_from(sizes).map(bytes))


class MessageStrategies:
    """Wire-bytes strategies for the messages of a file set, built once per message type.

    Valid ones (`hostile` false) decode: UTF-8 strings, defined enum values, the right wire
    types; only their values are odd (huge, negative, empty, too long, aimed outside the root),
    so calls get past decoding into the handlers. Hostile ones do not hold back."""

    def __init__(self, hints: Hints, hostile: bool, max_depth: int = 4) -> None:
        self.hints = hints
        self.hostile = hostile
        self.max_depth = max_depth
        self._cache: dict[tuple[str, int, str | None], Bytes] = {}

    def message(self, descriptor: Descriptor, depth: int = 0, only: str | None = None) -> Bytes:
        """Serialized messages of `descriptor` (only the field `only` when given): every field
        absent, present once or twice, in any order, plus unknown fields now and then."""
        key = (descriptor.full_name, depth, only)
        if key not in self._cache:
            if depth >= self.max_depth:
                self._cache[key] = st.just(b"")
            else:
                fields = [f for f in descriptor.fields if only is None or f.name == only]
                parts = [st.one_of(st.just(b""), self.occurrences(f, depth)) for f in fields]
                extras = st.lists(unknown_field(self.hostile), max_size=2)
                self._cache[key] = st.tuples(st.tuples(*parts), extras, st.randoms()).map(
                    lambda drawn: _shuffled([*drawn[0], *drawn[1]], drawn[2])
                )
        return self._cache[key]

    def occurrences(self, fd: FieldDescriptor, depth: int) -> Bytes:
        """One field's bytes: one value, or for repeated fields a few, a packed run or an
        oversized run; now and then the right number with the wrong wire type."""
        if is_repeated(fd):
            one = self.value(fd, depth, large=False)
            several = st.lists(one, max_size=4).map(b"".join)
            oversized = st.tuples(one, st.sampled_from((300, 5_000))).map(
                lambda pair: pair[0] * min(pair[1], OVERSIZED_BYTES // max(1, len(pair[0])))
            )
            choices = [several, oversized]
            if fd.type in _VARINT_TYPES:
                packed = st.lists(_varint_payload(fd, self.hostile), max_size=2_000).map(
                    lambda values: delimited(fd.number, b"".join(map(varint, values)))
                )
                choices.append(packed)
            return st.one_of(*choices)
        one = self.value(fd, depth, large=depth <= 1)
        twice = st.tuples(one, one).map(b"".join)  # singular: the last one wins (merges)
        if not self.hostile:
            return st.one_of(one, one, twice)
        return st.one_of(one, one, twice, wrong_wire_type(fd.number))

    def value(self, fd: FieldDescriptor, depth: int, large: bool) -> Bytes:
        """One occurrence of the field; `large` allows strings and bytes of a MiB."""
        number = fd.number
        if fd.type in _VARINT_TYPES:
            values = _varint_payload(fd, self.hostile)
            return values.map(lambda v: tag(number, VARINT) + varint(v))
        if fd.type in _FIXED32_FORMATS:
            return _fixed(_FIXED32_FORMATS[fd.type]).map(lambda b: tag(number, FIXED32) + b)
        if fd.type in _FIXED64_FORMATS:
            return _fixed(_FIXED64_FORMATS[fd.type]).map(lambda b: tag(number, FIXED64) + b)
        if fd.type == _T.TYPE_STRING:
            return strings(fd.name, self.hints, large, self.hostile).map(
                lambda b: delimited(number, b)
            )
        if fd.type == _T.TYPE_BYTES:
            return _blobs(large).map(lambda b: delimited(number, b))
        if fd.type == _T.TYPE_MESSAGE:
            inner_type = fd.message_type
            assert inner_type is not None
            inner = st.deferred(lambda: self.message(inner_type, depth + 1))  # recursive types
            return inner.map(lambda b: delimited(number, b))
        raise NotImplementedError(f"no strategy for field type {fd.type} ({fd.full_name})")


def _shuffled(parts: list[bytes], rng: Any) -> bytes:
    rng.shuffle(parts)
    return b"".join(parts)


def unknown_field(hostile: bool) -> Bytes:
    """A field number no message here uses, of any wire type (`hostile`: groups that never
    end, or end without starting)."""
    numbers = st.integers(100, 2**29 - 1)
    choices = [
        st.tuples(numbers, _integers()).map(lambda p: tag(p[0], VARINT) + varint(p[1])),
        st.tuples(numbers, st.binary(max_size=20)).map(lambda p: delimited(*p)),
        st.tuples(numbers, st.binary(min_size=8, max_size=8)).map(
            lambda p: tag(p[0], FIXED64) + p[1]
        ),
    ]
    if hostile:
        choices.append(numbers.map(lambda n: tag(n, START_GROUP)))
        choices.append(numbers.map(lambda n: tag(n, END_GROUP)))
    return st.one_of(*choices)


def wrong_wire_type(number: int) -> Bytes:
    """Field `number` with any wire type, possibly not the one its type has."""
    return st.one_of(
        _integers().map(lambda v: tag(number, VARINT) + varint(v)),
        st.binary(max_size=12).map(lambda b: delimited(number, b)),
        st.binary(min_size=4, max_size=4).map(lambda b: tag(number, FIXED32) + b),
        st.binary(min_size=8, max_size=8).map(lambda b: tag(number, FIXED64) + b),
    )


def mutated(strategy: Bytes) -> Bytes:
    """`strategy`'s bytes with up to three bytes changed, cut off, or junk inserted."""
    edit = st.tuples(
        st.sampled_from(("flip", "cut", "insert")), st.integers(0, 2**16), st.binary(max_size=8)
    )

    def apply(drawn: tuple[bytes, list[tuple[str, int, bytes]]]) -> bytes:
        data, edits = bytearray(drawn[0]), drawn[1]
        for kind, position, junk in edits:
            at = position % (len(data) + 1)
            if kind == "flip" and at < len(data):
                data[at] ^= junk[0] if junk else 0xFF
            elif kind == "cut":
                del data[at:]
            else:
                data[at:at] = junk
        return bytes(data)

    return st.tuples(strategy, st.lists(edit, min_size=1, max_size=3)).map(apply)


def requests(hints: Hints, descriptor: Descriptor) -> Bytes:
    """One request of `descriptor`: valid (half the time), hostile, or valid then mutated."""
    valid = MessageStrategies(hints, hostile=False).message(descriptor)
    hostile = MessageStrategies(hints, hostile=True).message(descriptor)
    return st.one_of(valid, valid, hostile, mutated(valid))


def request_streams(hints: Hints, descriptor: Descriptor) -> st.SearchStrategy[list[bytes]]:
    """A request stream: messages that each set one top-level field (a header alone, data
    alone, ...) or several, in any order and number, now and then a hostile or mutated one."""
    valid = MessageStrategies(hints, hostile=False)
    single = [valid.message(descriptor, only=f.name) for f in descriptor.fields]
    return st.lists(st.one_of(*single, requests(hints, descriptor)), max_size=8)


# -- plausible uploads, then broken -----------------------------------------------------------


UPLOAD_FIELDS = ("header", "data", "finish")
"""A request stream of this shape uploads files: a header opens one, data carries its bytes,
finish closes it (and `files` packs whole ones)."""


def is_upload(descriptor: Descriptor) -> bool:
    return set(UPLOAD_FIELDS) <= set(descriptor.fields_by_name)


def _file_events(
    path: str, content: bytes, pieces: int, declared: int | None, header_extra: dict[str, Any],
    finish_sha: str | None, crc: bool, data_in_header: bool,
) -> list[dict[str, Any]]:  # fmt: skip
    header: dict[str, Any] = {"path": path, **header_extra}
    if declared is not None:
        header["size"] = declared
    step = max(1, -(-len(content) // pieces))
    chunks = [content[i : i + step] for i in range(0, len(content), step)] or [b""]
    first: dict[str, Any] = {"header": header}
    if data_in_header:
        first["data"] = chunks.pop(0)
    finish: dict[str, Any] = {}
    if finish_sha is not None:
        finish["sha256"] = finish_sha
    if crc:
        finish["crc32c"] = crc32c(content)
    return [first, *({"data": chunk} for chunk in chunks), {"finish": finish}]


def upload_streams(
    descriptor: Descriptor, hints: Hints
) -> st.SearchStrategy[tuple[list[bytes], str]]:
    """Streams that start as correct uploads of one to three files, then get broken: a message
    dropped, repeated or moved (data before the header, finish twice, a second header), the
    declared size or offset off by one or by 2**62, a wrong digest, an undefined overwrite
    policy, another run's or session's id. Returns the serialized messages and a description."""
    cls = message_factory.GetMessageClass(descriptor)
    paths = hints.for_field("path") or ("fuzz/upload.bin",)
    header_extra = st.fixed_dictionaries(
        {},
        optional={
            "overwrite": st.sampled_from((0, 1, 2)),
            "run_id": st.sampled_from(hints.for_field("run_id") or ("",)),
            "upload_id": st.sampled_from(hints.for_field("upload_id") or ("",)),
            "offset": st.sampled_from((0, 1, -1, 2**62, 2**63 - 1)),
            "sha256": st.sampled_from(("", "0" * 64, "not-a-digest")),
        },
    )
    size_error = st.sampled_from((0, 0, 0, 1, -1, -(2**40), 2**62))
    content = st.one_of(st.binary(max_size=600), st.sampled_from((70_000, 300_000)).map(bytes))

    @st.composite
    def one_file(draw: Callable[..., Any]) -> list[dict[str, Any]]:
        data = draw(content)
        declared = draw(st.one_of(st.none(), size_error.map(lambda e: len(data) + e)))
        digest = hashlib.sha256(data).hexdigest()
        finish_sha = draw(st.sampled_from((digest, digest, None, "0" * 64, digest.upper())))
        return _file_events(
            draw(st.sampled_from(paths)), data, draw(st.integers(1, 3)), declared,
            draw(header_extra), finish_sha, draw(st.booleans()), draw(st.booleans()),
        )  # fmt: skip

    edit = st.tuples(st.sampled_from(("drop", "repeat", "move")), st.integers(0, 30),
                     st.integers(0, 30))  # fmt: skip
    files = st.integers(1, 3 if "files" in descriptor.fields_by_name else 1)

    @st.composite
    def stream(draw: Callable[..., Any]) -> tuple[list[bytes], str]:
        events = [e for _ in range(draw(files)) for e in draw(one_file())]
        edits = draw(st.lists(edit, max_size=2))
        for kind, i, j in edits:
            at = i % len(events)
            if kind == "drop" and len(events) > 1:
                events.pop(at)
            elif kind == "repeat":
                events.insert(j % (len(events) + 1), events[at])
            elif kind == "move":
                events.insert(j % len(events), events.pop(at))
        if "files" in descriptor.fields_by_name and draw(st.booleans()):
            events = _packed(events, draw(st.integers(0, len(events))))
        shape = " ".join("+".join(sorted(e)) for e in events)
        return [cls(**e).SerializeToString() for e in events], f"{shape} after {edits}"

    return stream()


def _packed(events: list[dict[str, Any]], at: int) -> list[dict[str, Any]]:
    """The events with a `files` message of the events' first whole file inserted at `at`."""
    header = next((e["header"] for e in events if "header" in e), {"path": "fuzz/packed"})
    data = b"".join(e.get("data", b"") for e in events)[:100]
    packed = {
        "header": header,
        "data": data,
        "finish": {"sha256": hashlib.sha256(data).hexdigest()},
    }
    return [*events[:at], {"files": [packed, packed]}, *events[at:]]
