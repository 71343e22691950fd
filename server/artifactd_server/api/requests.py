"""What the access log takes from a call: its request id and the artifact path it is about.

Only these: never another metadata value (an `authorization` header, a cookie), never data.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from artifactd.protocol.wire import Chunk

REQUEST_ID_KEY = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MAX_LOGGED_PATH = 1024


def request_id(metadata: Iterable[Any] | None) -> str:
    """The caller's `x-request-id` if it is sane (short, no odd characters), else a new one."""
    for item in metadata or ():
        key, value = item[0], item[1]
        if key == REQUEST_ID_KEY:
            if isinstance(value, str) and _SANE_ID.fullmatch(value):
                return value
            break
    return uuid.uuid4().hex


_PathReader = Callable[[Any], str]
_readers: dict[object, _PathReader] = {}


def _no_path(message: Any) -> str:
    return ""


def _reader(descriptor: Any) -> _PathReader:
    """Where a message type keeps its path: a `path` string, or a `header` message's `path`."""
    fields = descriptor.fields_by_name
    path = fields.get("path")
    if path is not None and path.type == FieldDescriptor.TYPE_STRING and not is_repeated(path):
        return lambda message: str(message.path)
    header = fields.get("header")
    if (
        header is not None
        and header.message_type is not None
        and not is_repeated(header)
        and "path" in header.message_type.fields_by_name
    ):
        return lambda message: str(message.header.path) if message.HasField("header") else ""
    return _no_path


def is_repeated(field: FieldDescriptor) -> bool:
    repeated = getattr(field, "is_repeated", None)  # newer protobuf; `label` before
    if repeated is None:
        repeated = getattr(field, "label", None) == FieldDescriptor.LABEL_REPEATED
    return bool(repeated)


def request_path(message: object) -> str:
    """The request's artifact path ("" if it has none), cut to a sane length."""
    if isinstance(message, Chunk):
        message = message.message
    if not isinstance(message, Message):
        return ""
    descriptor = message.DESCRIPTOR
    reader = _readers.get(descriptor)
    if reader is None:
        reader = _readers.setdefault(descriptor, _reader(descriptor))
    return reader(message)[:MAX_LOGGED_PATH]
