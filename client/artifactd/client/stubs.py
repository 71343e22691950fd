"""The ArtifactService stub of the client: the generated one, except that the four methods that
move file bytes (de)serialize them with `artifactd.protocol.wire`, copying them less."""

from __future__ import annotations

from typing import Any

import grpc

from artifactd.protocol.wire import ChunkDecoder, ChunkEncoder
from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc

_SERVICE = pb.DESCRIPTOR.services_by_name["ArtifactService"].full_name


class ArtifactStub(pb_grpc.ArtifactServiceStub):
    """Uploads take `wire.OutgoingChunk`s as well as messages; downloads yield `wire.Chunk`s,
    which read like the messages they wrap."""

    LogArtifact: grpc.StreamUnaryMultiCallable[Any, pb.LogArtifactResponse]
    LogArtifacts: grpc.StreamUnaryMultiCallable[Any, pb.LogArtifactsResponse]
    DownloadArtifact: grpc.UnaryStreamMultiCallable[pb.DownloadArtifactRequest, Any]
    DownloadArtifacts: grpc.UnaryStreamMultiCallable[pb.DownloadArtifactsRequest, Any]

    def __init__(self, channel: grpc.Channel) -> None:
        super().__init__(channel)  # type: ignore[call-arg]  # typed as __new__ overloads
        self.LogArtifact = channel.stream_unary(
            f"/{_SERVICE}/LogArtifact",
            request_serializer=ChunkEncoder(pb.LogArtifactRequest),
            response_deserializer=pb.LogArtifactResponse.FromString,
        )
        self.LogArtifacts = channel.stream_unary(
            f"/{_SERVICE}/LogArtifacts",
            request_serializer=ChunkEncoder(pb.LogArtifactsRequest),
            response_deserializer=pb.LogArtifactsResponse.FromString,
        )
        self.DownloadArtifact = channel.unary_stream(
            f"/{_SERVICE}/DownloadArtifact",
            request_serializer=pb.DownloadArtifactRequest.SerializeToString,
            response_deserializer=ChunkDecoder(pb.DownloadArtifactResponse),
        )
        self.DownloadArtifacts = channel.unary_stream(
            f"/{_SERVICE}/DownloadArtifacts",
            request_serializer=pb.DownloadArtifactsRequest.SerializeToString,
            response_deserializer=ChunkDecoder(pb.DownloadArtifactsResponse),
        )
