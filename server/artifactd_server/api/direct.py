"""The direct-transfer RPCs of ArtifactService: protobuf <-> `multipart.DirectUploads`.

Also the resumable-upload RPCs (the streaming itself is LogArtifact's). A mixin of
`ArtifactServicer` (gRPC takes one servicer per service); kept apart so the streamed
transfers and the presigned ones each read on their own.
"""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd.v1 import artifact_service_pb2_grpc as pb_grpc
from artifactd_server.api.convert import file_info, timestamp_ns
from artifactd_server.api.status import translate_errors
from artifactd_server.domain import identity
from artifactd_server.domain.multipart import MAX_URLS_PER_CALL, DirectUploads, Part
from artifactd_server.domain.resumable import ResumableUploads
from artifactd_server.storage.base import PresignedRequest, StoredPart
from artifactd_server.store.upload_sessions import UploadSession


def caller(context: grpc.ServicerContext) -> str:
    """The principal a session belongs to ("" when authentication is off)."""
    return identity.current().name


def _timestamp(seconds: float) -> Timestamp:
    return timestamp_ns(int(seconds * 1_000_000_000))


def _request(request: PresignedRequest) -> pb.PresignedRequest:
    return pb.PresignedRequest(
        url=request.url,
        method=request.method,
        headers=request.headers,
        expires_time=_timestamp(request.expires_at),
    )


def _part(part: Part) -> pb.UploadPart:
    message = pb.UploadPart(part_number=part.number, offset=part.offset, size=part.size)
    if part.request is not None:
        message.request.CopyFrom(_request(part.request))
    return message


def _stored(part: StoredPart) -> pb.StoredPart:
    return pb.StoredPart(part_number=part.number, etag=part.etag, size=part.size)


def _layout(session: UploadSession) -> tuple[int, int]:
    return session.part_size, session.part_count


class DirectTransferMethods(pb_grpc.ArtifactServiceServicer):
    _direct: DirectUploads
    _resumable: ResumableUploads

    @translate_errors
    def StartResumableUpload(  # noqa: N802 - gRPC method names
        self, request: pb.StartResumableUploadRequest, context: grpc.ServicerContext
    ) -> pb.StartResumableUploadResponse:
        session = self._resumable.start(
            run_id=request.run_id,
            path_text=request.path,
            size=request.size,
            sha256=request.sha256,
            overwrite=request.overwrite != pb.OVERWRITE_POLICY_FAIL_IF_EXISTS,
            owner=caller(context),
        )
        if session is None:
            return pb.StartResumableUploadResponse(supported=False)
        return pb.StartResumableUploadResponse(
            supported=True,
            upload_id=session.upload_id,
            expires_time=_timestamp(session.expiry_time / 1000),
        )

    @translate_errors
    def QueryWriteStatus(  # noqa: N802
        self, request: pb.QueryWriteStatusRequest, context: grpc.ServicerContext
    ) -> pb.QueryWriteStatusResponse:
        held, size = self._resumable.status(request.upload_id, caller(context))
        return pb.QueryWriteStatusResponse(committed_size=held, size=size)

    @translate_errors
    def CreateMultipartUpload(  # noqa: N802 - gRPC method names
        self, request: pb.CreateMultipartUploadRequest, context: grpc.ServicerContext
    ) -> pb.CreateMultipartUploadResponse:
        opened = self._direct.create(
            run_id=request.run_id,
            path_text=request.path,
            size=request.size,
            sha256=request.sha256,
            overwrite=request.overwrite != pb.OVERWRITE_POLICY_FAIL_IF_EXISTS,
            part_size=request.part_size,
            owner=caller(context),
        )
        if opened is None:
            return pb.CreateMultipartUploadResponse(supported=False)
        session, parts = opened
        part_size, part_count = _layout(session)
        return pb.CreateMultipartUploadResponse(
            supported=True,
            upload_id=session.upload_id,
            part_size=part_size,
            part_count=part_count,
            parts=[_part(p) for p in parts],
            max_urls_per_call=MAX_URLS_PER_CALL,
            expires_time=_timestamp(session.expiry_time / 1000),
        )

    @translate_errors
    def GetMultipartUploadUrls(  # noqa: N802
        self, request: pb.GetMultipartUploadUrlsRequest, context: grpc.ServicerContext
    ) -> pb.GetMultipartUploadUrlsResponse:
        parts = self._direct.urls(request.upload_id, list(request.part_numbers), caller(context))
        return pb.GetMultipartUploadUrlsResponse(parts=[_part(p) for p in parts])

    @translate_errors
    def ListMultipartUploadParts(  # noqa: N802
        self, request: pb.ListMultipartUploadPartsRequest, context: grpc.ServicerContext
    ) -> pb.ListMultipartUploadPartsResponse:
        session, parts = self._direct.stored_parts(request.upload_id, caller(context))
        part_size, part_count = _layout(session)
        return pb.ListMultipartUploadPartsResponse(
            parts=[_stored(p) for p in parts], part_size=part_size, part_count=part_count
        )

    @translate_errors
    def CompleteMultipartUpload(  # noqa: N802
        self, request: pb.CompleteMultipartUploadRequest, context: grpc.ServicerContext
    ) -> pb.CompleteMultipartUploadResponse:
        claimed = [StoredPart(p.part_number, p.etag, p.size) for p in request.parts]
        entry = self._direct.complete(request.upload_id, claimed, caller(context))
        return pb.CompleteMultipartUploadResponse(file=file_info(entry))

    @translate_errors
    def AbortMultipartUpload(  # noqa: N802
        self, request: pb.AbortMultipartUploadRequest, context: grpc.ServicerContext
    ) -> pb.AbortMultipartUploadResponse:
        existed = self._direct.abort(request.upload_id, caller(context))
        return pb.AbortMultipartUploadResponse(existed=existed)

    @translate_errors
    def GetDownloadUrl(  # noqa: N802
        self, request: pb.GetDownloadUrlRequest, context: grpc.ServicerContext
    ) -> pb.GetDownloadUrlResponse:
        found = self._direct.download_url(request.run_id, request.path)
        if found is None:
            return pb.GetDownloadUrlResponse(supported=False)
        entry, presigned = found
        return pb.GetDownloadUrlResponse(
            supported=True, file=file_info(entry), request=_request(presigned)
        )
