"""(De)coding the messages that carry file bytes without copying those bytes more than needed.

Python's protobuf copies a `bytes` field when it parses a message (into the message's arena) and
again every time the field is read (into a new `bytes` object); sending, it copies the bytes into
the message and again into its serialization. For the few messages that move gigabytes
(LogArtifact(s)Request, DownloadArtifact(s)Response) those copies are a measurable share of a
transfer's CPU, so:

* `ChunkDecoder` leaves the `data` field as a view of the buffer gRPC delivered and hands only
  the other, small fields to protobuf. Anything its scan does not understand goes to protobuf
  whole, which accepts or rejects it exactly as it would have without this module.
* `ChunkEncoder` serializes the small fields with protobuf and appends the `data` field to them
  (protobuf reads fields in any order): one copy where protobuf makes two.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

_LENGTH_DELIMITED = 2
_FIXED_SIZES = {1: 8, 5: 4}  # wire types 64-bit and 32-bit
_VARINT = 0


class Chunk(Generic[M]):
    """A decoded message whose `data` is a memoryview of the received buffer.

    Every other attribute is the protobuf message's (it was parsed without `data`), so code that
    reads `header`, `finish`, `info`, `HasField(...)` works on either; `ByteSize()` is the size
    on the wire, data included.
    """

    __slots__ = ("_size", "data", "message")

    def __init__(self, message: M, data: memoryview, size: int) -> None:
        self.message = message
        self.data = data
        self._size = size

    def ByteSize(self) -> int:  # noqa: N802 - protobuf's name
        return self._size

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message, name)


class ChunkDecoder(Generic[M]):
    """A gRPC deserializer for `message_type`, whose bytes field `data` is not copied."""

    def __init__(self, message_type: type[M], data_field: str = "data") -> None:
        field = message_type.DESCRIPTOR.fields_by_name[data_field]
        self._type = message_type
        self._data_field = data_field
        self._data_key = (field.number << 3) | _LENGTH_DELIMITED

    def __call__(self, buffer: bytes) -> Chunk[M]:
        try:
            data, others = self._split(buffer)
        except _Unusual:
            return self._parsed_whole(buffer)
        message = self._type.FromString(b"".join(others)) if others else self._type()
        return Chunk(message, data, len(buffer))

    def _split(self, buffer: bytes) -> tuple[memoryview, list[memoryview]]:
        """The last `data` field as a view, and the encodings of every other field."""
        view = memoryview(buffer)
        data = view[0:0]
        others: list[memoryview] = []
        end = len(buffer)
        position = 0
        while position < end:
            start = position
            key, position = _varint(buffer, position)
            wire_type = key & 7
            if wire_type == _LENGTH_DELIMITED:
                length, position = _varint(buffer, position)
                if key == self._data_key:
                    if position + length > end:
                        raise _Unusual
                    data = view[position : position + length]  # the last one wins, as in protobuf
                    position += length
                    continue
                position += length
            elif wire_type == _VARINT:
                _, position = _varint(buffer, position)
            elif wire_type in _FIXED_SIZES:
                position += _FIXED_SIZES[wire_type]
            else:
                raise _Unusual  # groups, or garbage
            if position > end:
                raise _Unusual
            others.append(view[start:position])
        return data, others

    def _parsed_whole(self, buffer: bytes) -> Chunk[M]:
        message = self._type.FromString(buffer)  # raises DecodeError for a malformed message
        data = memoryview(getattr(message, self._data_field))
        message.ClearField(self._data_field)
        return Chunk(message, data, len(buffer))


class OutgoingChunk(Generic[M]):
    """A message to send and the file bytes of its `data` field, kept apart until `ChunkEncoder`
    writes both (the message's own `data` must be empty)."""

    __slots__ = ("data", "message")

    def __init__(self, message: M, data: bytes) -> None:
        self.message = message
        self.data = data


class ChunkEncoder(Generic[M]):
    """A gRPC serializer for `message_type` that also takes `OutgoingChunk`s."""

    def __init__(self, message_type: type[M], data_field: str = "data") -> None:
        field = message_type.DESCRIPTOR.fields_by_name[data_field]
        self._key = _encoded_varint((field.number << 3) | _LENGTH_DELIMITED)

    def __call__(self, outgoing: OutgoingChunk[M] | M) -> bytes:
        if not isinstance(outgoing, OutgoingChunk):
            return outgoing.SerializeToString()
        head = outgoing.message.SerializeToString()
        data = outgoing.data
        if not data:
            return head
        return b"".join((head, self._key, _encoded_varint(len(data)), data))


def _encoded_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Unusual(Exception):
    """The buffer is not the plain encoding the fast path reads; protobuf decides."""


def _varint(buffer: bytes, position: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while shift < 64:
        if position >= len(buffer):
            raise _Unusual
        byte = buffer[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
    raise _Unusual
