"""artifactd.protocol.wire: the zero-copy decoder must read every buffer exactly as protobuf does."""

from __future__ import annotations

import random

import pytest
from google.protobuf.message import DecodeError

from artifactd.protocol.wire import ChunkDecoder, ChunkEncoder, OutgoingChunk
from artifactd.v1 import artifact_service_pb2 as pb

DECODE = ChunkDecoder(pb.LogArtifactRequest)


def _as_protobuf_reads(buffer: bytes) -> pb.LogArtifactRequest:
    chunk = DECODE(buffer)
    rebuilt = pb.LogArtifactRequest()
    rebuilt.CopyFrom(chunk.message)
    rebuilt.data = bytes(chunk.data)
    assert chunk.ByteSize() == len(buffer)
    return rebuilt


def _random_message(rng: random.Random) -> pb.LogArtifactRequest:
    message = pb.LogArtifactRequest(data=rng.randbytes(rng.choice((0, 1, 127, 128, 70_000))))
    if rng.random() < 0.5:
        message.header.path = "a/ü/" + "x" * rng.randrange(300)
        message.header.size = rng.randrange(1 << 40)
        message.header.upload_id = "id"
    if rng.random() < 0.5:
        message.finish.sha256 = "ab" * 32
    return message


def test_messages_decode_as_protobuf_decodes_them() -> None:
    rng = random.Random(7)
    for _ in range(300):
        message = _random_message(rng)
        buffer = message.SerializeToString()
        assert _as_protobuf_reads(buffer) == pb.LogArtifactRequest.FromString(buffer) == message


def test_data_is_a_view_of_the_received_buffer_not_a_copy() -> None:
    buffer = pb.LogArtifactRequest(data=b"z" * 100_000).SerializeToString()
    chunk = DECODE(buffer)
    assert isinstance(chunk.data, memoryview)
    assert chunk.data.obj is buffer
    assert not chunk.HasField("header") and not chunk.HasField("finish")


def test_fields_in_any_order_repeated_data_and_unknown_fields_follow_protobuf() -> None:
    finish = pb.LogArtifactRequest(finish=pb.UploadFinish(sha256="cd" * 32)).SerializeToString()
    first = pb.LogArtifactRequest(data=b"first").SerializeToString()
    last = pb.LogArtifactRequest(data=b"last").SerializeToString()
    unknown = bytes([(9 << 3) | 0, 5, (10 << 3) | 5, 1, 2, 3, 4, (11 << 3) | 1]) + bytes(8)
    wrong_type = bytes([(2 << 3) | 0, 7])  # field `data` as a varint: protobuf keeps it unknown
    for buffer in (
        finish + first + last,
        last + finish + unknown + first,
        unknown + wrong_type + finish,
        first + wrong_type,
    ):
        assert _as_protobuf_reads(buffer) == pb.LogArtifactRequest.FromString(buffer)
        reparsed = pb.LogArtifactRequest.FromString(buffer).SerializeToString()
        assert _as_protobuf_reads(buffer).SerializeToString() == reparsed  # unknowns kept


@pytest.mark.parametrize(
    "buffer",
    [
        bytes([0x12, 10]) + b"short",  # data longer than the buffer
        bytes([0x12]),  # a length that never comes
        bytes([0x12, 0xFF, 0xFF]),  # a varint cut short
        bytes([0x0A, 3, 0xFF, 0xFF, 0xFF]),  # a header that is not a message
        bytes([0x13, 0x14]),  # a group
        bytes([0x80] * 11),  # a varint too long
    ],
)
def test_malformed_buffers_are_refused_as_protobuf_refuses_them(buffer: bytes) -> None:
    _check_decodes_as_protobuf_does(buffer)


def _check_decodes_as_protobuf_does(buffer: bytes) -> None:
    try:
        expected: pb.LogArtifactRequest | None = pb.LogArtifactRequest.FromString(buffer)
    except DecodeError:
        expected = None
    if expected is None:
        with pytest.raises(DecodeError):
            DECODE(buffer)
    else:
        assert _as_protobuf_reads(buffer) == expected


def test_random_bytes_are_accepted_or_refused_exactly_as_protobuf_does() -> None:
    rng = random.Random(11)
    seeds = [_random_message(rng).SerializeToString() for _ in range(20)]
    for _ in range(3000):
        buffer = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            if buffer:
                buffer[rng.randrange(len(buffer))] = rng.randrange(256)
        if rng.random() < 0.3 and buffer:
            del buffer[rng.randrange(len(buffer)) :]
        _check_decodes_as_protobuf_does(bytes(buffer))


def test_outgoing_chunks_encode_to_what_protobuf_reads_as_the_whole_message() -> None:
    encode = ChunkEncoder(pb.LogArtifactRequest)
    rng = random.Random(5)
    for _ in range(200):
        message = _random_message(rng)
        data, without_data = message.data, pb.LogArtifactRequest()
        without_data.CopyFrom(message)
        without_data.ClearField("data")
        buffer = encode(OutgoingChunk(without_data, data))
        assert pb.LogArtifactRequest.FromString(buffer) == message
        assert _as_protobuf_reads(buffer) == message
        assert encode(message) == message.SerializeToString()  # plain messages pass through
