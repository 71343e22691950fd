"""Writes docs/reference/protobuf.md from protos/; `--check` fails when the page is stale.

protoc (grpcio-tools, the version the stubs are generated with) compiles protos/ into a
descriptor set with source info, so every service, RPC, message, field, enum and value is
rendered with the comment written above it in the .proto: the protos stay the one place the API
is described, and this page cannot disagree with them. scripts/test.sh runs it with `--check`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import docpage
import grpc_tools
from docpage import ROOT
from google.protobuf import descriptor_pb2

PROTOS = ROOT / "protos"
PAGE = ROOT / "docs" / "reference" / "protobuf.md"

# Field numbers inside descriptor.proto, for SourceCodeInfo.Location.path
FILE_MESSAGE, FILE_ENUM, FILE_SERVICE = 4, 5, 6
MESSAGE_FIELD, MESSAGE_NESTED, MESSAGE_ENUM = 2, 3, 4
ENUM_VALUE = 2
SERVICE_METHOD = 2

FDP = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    FDP.TYPE_DOUBLE: "double",
    FDP.TYPE_FLOAT: "float",
    FDP.TYPE_INT64: "int64",
    FDP.TYPE_UINT64: "uint64",
    FDP.TYPE_INT32: "int32",
    FDP.TYPE_FIXED64: "fixed64",
    FDP.TYPE_FIXED32: "fixed32",
    FDP.TYPE_BOOL: "bool",
    FDP.TYPE_STRING: "string",
    FDP.TYPE_BYTES: "bytes",
    FDP.TYPE_UINT32: "uint32",
    FDP.TYPE_SFIXED32: "sfixed32",
    FDP.TYPE_SFIXED64: "sfixed64",
    FDP.TYPE_SINT32: "sint32",
    FDP.TYPE_SINT64: "sint64",
}


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """protos/ compiled by grpcio-tools' protoc, with comments (source info)."""
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    includes = Path(grpc_tools.__file__).parent / "_proto"  # google/protobuf/*.proto
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "grpc_tools.protoc",
                f"-I{PROTOS}",
                f"-I{includes}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *files,
            ],
            check=True,
            cwd=PROTOS,
        )
        result = descriptor_pb2.FileDescriptorSet()
        result.ParseFromString(out.read_bytes())
    return result


class Comments:
    """The comments of one .proto file, by the element's descriptor path."""

    def __init__(self, file: descriptor_pb2.FileDescriptorProto) -> None:
        self._by_path = {
            tuple(location.path): location for location in file.source_code_info.location
        }

    def __call__(self, *path: int) -> str:
        location = self._by_path.get(path)
        if location is None:
            return ""
        text = location.leading_comments or location.trailing_comments
        lines = [line[1:] if line.startswith(" ") else line for line in text.split("\n")]
        return "\n".join(lines).strip()


def anchor(full_name: str) -> str:
    return full_name.lstrip(".").replace(".", "-").lower()


def one_line(text: str) -> str:
    """A comment for a table cell: paragraphs joined, column breaks and tags escaped."""
    flat = re.sub(r"\s*\n\s*", " ", text).strip()
    return flat.replace("|", "\\|").replace("<", "&lt;")


def paragraphs(text: str) -> str:
    """A comment as Markdown paragraphs (blank comment lines separate them)."""
    return re.sub(r"(?<!\n)\n(?!\n)", " ", text).replace("<", "&lt;")


class Renderer:
    def __init__(self, files: Sequence[descriptor_pb2.FileDescriptorProto]) -> None:
        self.files = files
        self.local = {
            f".{file.package}.{name}"
            for file in files
            for name in self._type_names(file.message_type, file.enum_type)
        }

    def _type_names(
        self,
        messages: Sequence[descriptor_pb2.DescriptorProto],
        enums: Sequence[descriptor_pb2.EnumDescriptorProto],
        prefix: str = "",
    ) -> Iterator[str]:
        for enum in enums:
            yield prefix + enum.name
        for message in messages:
            yield prefix + message.name
            yield from self._type_names(
                message.nested_type, message.enum_type, prefix + message.name + "."
            )

    def link(self, type_name: str) -> str:
        short = type_name.rsplit(".", 1)[-1]
        if type_name in self.local:
            return f"[`{short}`](#{anchor(type_name)})"
        return f"`{type_name.lstrip('.')}`"

    def field_type(
        self, field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto
    ) -> str:
        if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
            entry = next(
                (
                    nested
                    for nested in message.nested_type
                    if nested.options.map_entry and field.type_name.endswith("." + nested.name)
                ),
                None,
            )
            if entry is not None:
                key, value = entry.field
                return f"map&lt;{self.scalar_or_link(key)}, {self.scalar_or_link(value)}&gt;"
            return self.link(field.type_name)
        return f"`{SCALARS[field.type]}`"

    def scalar_or_link(self, field: descriptor_pb2.FieldDescriptorProto) -> str:
        if field.type in (FDP.TYPE_MESSAGE, FDP.TYPE_ENUM):
            return self.link(field.type_name)
        return f"`{SCALARS[field.type]}`"

    def render(self) -> str:
        lines = [
            "# Protobuf API reference",
            "",
            "<!-- Generated by scripts/gen_proto_docs.py from protos/: edit the .proto "
            "comments, then run the script. -->",
            "",
            "Generated from the `.proto` files under `protos/` and the comments in them. "
            "[The API](api.md) explains the streaming protocols, errors and paths in prose.",
            "",
        ]
        for file in self.files:
            comments = Comments(file)
            lines += [f"## `{file.name}`", "", f"Package `{file.package}`.", ""]
            for index, service in enumerate(file.service):
                lines += self.service(file, service, comments, (FILE_SERVICE, index))
            for index, message in enumerate(file.message_type):
                lines += self.message(f".{file.package}", message, comments, (FILE_MESSAGE, index))
            for index, enum in enumerate(file.enum_type):
                lines += self.enum(f".{file.package}", enum, comments, (FILE_ENUM, index))
        while lines[-1] == "":
            lines.pop()
        return "\n".join(lines) + "\n"

    def service(
        self,
        file: descriptor_pb2.FileDescriptorProto,
        service: descriptor_pb2.ServiceDescriptorProto,
        comments: Comments,
        path: tuple[int, ...],
    ) -> list[str]:
        full = f".{file.package}.{service.name}"
        lines = [f"### service {service.name} {{#{anchor(full)}}}", ""]
        if text := comments(*path):
            lines += [paragraphs(text), ""]
        lines += ["| RPC | request | response | description |", "|---|---|---|---|"]
        for index, method in enumerate(service.method):
            request = ("stream " if method.client_streaming else "") + self.link(method.input_type)
            response = ("stream " if method.server_streaming else "") + self.link(
                method.output_type
            )
            text = one_line(comments(*path, SERVICE_METHOD, index))
            lines.append(f"| `{method.name}` | {request} | {response} | {text} |")
        return [*lines, ""]

    def message(
        self,
        scope: str,
        message: descriptor_pb2.DescriptorProto,
        comments: Comments,
        path: tuple[int, ...],
    ) -> list[str]:
        if message.options.map_entry:
            return []
        full = f"{scope}.{message.name}"
        lines = [f"### {full.lstrip('.').split('.', 2)[-1]} {{#{anchor(full)}}}", ""]
        if text := comments(*path):
            lines += [paragraphs(text), ""]
        if message.field:
            lines += ["| field | number | type | label | description |", "|---|---|---|---|---|"]
            for index, field in enumerate(message.field):
                label = self.label(field, message)
                text = one_line(comments(*path, MESSAGE_FIELD, index))
                kind = self.field_type(field, message)
                lines.append(f"| `{field.name}` | {field.number} | {kind} | {label} | {text} |")
            lines.append("")
        else:
            lines += ["No fields.", ""]
        for index, nested in enumerate(message.nested_type):
            lines += self.message(full, nested, comments, (*path, MESSAGE_NESTED, index))
        for index, enum in enumerate(message.enum_type):
            lines += self.enum(full, enum, comments, (*path, MESSAGE_ENUM, index))
        return lines

    def label(
        self, field: descriptor_pb2.FieldDescriptorProto, message: descriptor_pb2.DescriptorProto
    ) -> str:
        if field.proto3_optional:
            return "optional"
        if field.label == FDP.LABEL_REPEATED:
            is_map = field.type == FDP.TYPE_MESSAGE and any(
                nested.options.map_entry and field.type_name.endswith("." + nested.name)
                for nested in message.nested_type
            )
            return "" if is_map else "repeated"
        if field.HasField("oneof_index"):
            return f"oneof `{message.oneof_decl[field.oneof_index].name}`"
        return ""

    def enum(
        self,
        scope: str,
        enum: descriptor_pb2.EnumDescriptorProto,
        comments: Comments,
        path: tuple[int, ...],
    ) -> list[str]:
        full = f"{scope}.{enum.name}"
        lines = [f"### enum {full.lstrip('.').split('.', 2)[-1]} {{#{anchor(full)}}}", ""]
        if text := comments(*path):
            lines += [paragraphs(text), ""]
        lines += ["| value | number | description |", "|---|---|---|"]
        for index, value in enumerate(enum.value):
            text = one_line(comments(*path, ENUM_VALUE, index))
            lines.append(f"| `{value.name}` | {value.number} | {text} |")
        return [*lines, ""]


def render() -> str:
    files = [f for f in descriptor_set().file if not f.name.startswith("google/")]
    return Renderer(files).render()


if __name__ == "__main__":
    sys.exit(docpage.main(__file__, PAGE, render))
