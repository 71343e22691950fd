"""Domain values -> protobuf messages, shared by the servicers."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from artifactd.v1 import artifact_service_pb2 as pb
from artifactd_server.storage.base import Entry


def timestamp_ns(nanoseconds: int) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(nanoseconds)
    return stamp


def file_info(entry: Entry) -> pb.FileInfo:
    return pb.FileInfo(
        path=str(entry.path),
        is_dir=entry.is_dir,
        file_size=entry.size,
        sha256=entry.sha256 or "",
        modified_time=timestamp_ns(entry.mtime_ns),
    )
