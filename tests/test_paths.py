"""The artifact path grammar (`artifactd.protocol.paths`): what it accepts, what it refuses and why.

Every server RPC and every path the client receives goes through `parse`, so these tables are the
specification of what an artifact path is. Each refused class names the rule (the text of the
`InvalidPath` message) so a regression that refuses for the wrong reason is caught too.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from artifactd.protocol.errors import ArtifactError, InvalidArgument
from artifactd.protocol.paths import (
    MAX_DEPTH,
    MAX_PATH_BYTES,
    MAX_SEGMENT_BYTES,
    RESERVED_PREFIX,
    ROOT,
    ArtifactPath,
    InvalidPath,
    join,
    parse,
)


def _path_of_bytes(total: int) -> str:
    """An ASCII path of exactly `total` bytes (1004 < total < 1259): five segments."""
    path = "/".join(["s" * 250] * 4 + ["t" * (total - 4 * 251)])
    assert len(path.encode()) == total
    return path


VALID = [
    pytest.param("a", id="one-letter"),
    pytest.param("file.tar.gz", id="several-dots"),
    pytest.param("données/模型/😀.bin", id="unicode-segments"),
    pytest.param("名前 スペース/résumé final.pdf", id="unicode-with-spaces"),
    pytest.param("a b/c d.txt", id="spaces"),
    pytest.param(" leading and trailing ", id="edge-spaces"),
    pytest.param("a%b", id="percent-not-an-escape"),
    pytest.param("100%", id="trailing-percent"),
    pytest.param("%", id="lone-percent"),
    pytest.param("%zz/%%", id="percent-non-hex"),
    pytest.param("50%25off", id="percent-escape-of-percent"),
    pytest.param("a%2fb", id="encoded-slash-kept-literal"),
    pytest.param("ab:c", id="colon-not-drive"),
    pytest.param("12:00.log", id="time-like-colon"),
    pytest.param("run/1:x", id="digit-colon"),
    pytest.param("CC:", id="two-letters-colon"),
    pytest.param("C", id="bare-letter"),
    pytest.param("..a/a../a..b", id="dots-inside-names"),
    pytest.param(".hidden/.config", id="hidden-names"),
    pytest.param(".artifactd", id="reserved-word-without-dash"),
    pytest.param("x.artifactd-upload", id="reserved-prefix-not-at-start"),
    pytest.param(
        "\uff46\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48/\uff21\uff22\uff23",
        id="fullwidth-letters",
    ),
    pytest.param("a~b/a@b/a+b=c/[x]/{y}/a'b\"c/-_", id="punctuation"),
    pytest.param("/".join(["level"] * 100), id="depth-100"),
    pytest.param("/".join(["d"] * MAX_DEPTH), id="depth-max"),
    pytest.param("x" * MAX_SEGMENT_BYTES, id="segment-255-bytes"),
    pytest.param("é" * 127, id="segment-254-bytes-2-byte-chars"),
    pytest.param("😀" * 63, id="segment-252-bytes-4-byte-chars"),
    pytest.param(_path_of_bytes(MAX_PATH_BYTES), id="path-1024-bytes"),
    pytest.param("%" + "25" * 6 + "41", id="percent-encoded-7-times"),
]


@pytest.mark.parametrize("raw", VALID)
def test_valid_paths_parse_to_their_segments(raw: str) -> None:
    path = parse(raw)
    assert path.parts == tuple(raw.split("/"))
    assert str(path) == raw
    assert not path.is_root
    assert parse(raw, allow_root=True) == path


_LONG_SEGMENT = "x" * (MAX_SEGMENT_BYTES + 1)
EMPTY = "is empty"
ABSOLUTE = "is absolute"
EMPTY_SEGMENT = "has an empty segment"
DOT_SEGMENT = "'.' and '..' segments are not allowed"
FORBIDDEN = "forbidden character"
CONTROL = "control or invisible character"
DRIVE = "drive-letter segment"
TOO_LONG = f"the limit is {MAX_PATH_BYTES}"
SEGMENT_TOO_LONG = f"segment longer than {MAX_SEGMENT_BYTES} bytes"
TOO_DEEP = f"the limit is {MAX_DEPTH}"
RESERVED = "reserved prefix"
BAD_UTF8 = "not valid UTF-8"
BAD_DECODED_UTF8 = "percent-decodes to invalid UTF-8"
OVER_ENCODED = "percent-encoded too many times"

INVALID = [
    # emptiness and slashes
    pytest.param("", EMPTY, id="empty"),
    pytest.param("/etc/passwd", ABSOLUTE, id="absolute"),
    pytest.param("//proc/self/root/etc/passwd", ABSOLUTE, id="double-slash-host"),
    pytest.param("/", ABSOLUTE, id="slash-only"),
    pytest.param("a/", EMPTY_SEGMENT, id="trailing-slash"),
    pytest.param("a//b", EMPTY_SEGMENT, id="doubled-slash"),
    pytest.param("file:///etc/passwd", EMPTY_SEGMENT, id="file-uri"),
    pytest.param("s3://bucket/key", EMPTY_SEGMENT, id="s3-uri"),
    # dot segments
    pytest.param(".", DOT_SEGMENT, id="dot"),
    pytest.param("..", DOT_SEGMENT, id="dotdot"),
    pytest.param("...", DOT_SEGMENT, id="three-dots"),
    pytest.param("....", DOT_SEGMENT, id="four-dots"),
    pytest.param("../etc/passwd", DOT_SEGMENT, id="leading-dotdot"),
    pytest.param("a/../../b", DOT_SEGMENT, id="inner-dotdot"),
    pytest.param("a/..", DOT_SEGMENT, id="trailing-dotdot"),
    pytest.param("a/./b", DOT_SEGMENT, id="inner-dot"),
    # forbidden characters
    pytest.param("\\..\\..\\etc\\passwd", FORBIDDEN, id="backslash-traversal"),
    pytest.param("a\\b", FORBIDDEN, id="backslash"),
    pytest.param("x#/../../etc", FORBIDDEN, id="fragment"),
    pytest.param("#", FORBIDDEN, id="hash-only"),
    pytest.param("x;/../../etc", FORBIDDEN, id="params-semicolon"),
    pytest.param("a;b", FORBIDDEN, id="semicolon"),
    pytest.param("x?/../../etc", FORBIDDEN, id="query"),
    pytest.param("a?b", FORBIDDEN, id="question-mark"),
    # control characters (Unicode Cc)
    pytest.param("a\x00b", CONTROL, id="nul"),
    pytest.param("a\x01b", CONTROL, id="soh"),
    pytest.param("a\tb", CONTROL, id="tab"),
    pytest.param("a\nb", CONTROL, id="newline"),
    pytest.param("a\rb", CONTROL, id="carriage-return"),
    pytest.param("a\x1b[31mb", CONTROL, id="escape"),
    pytest.param("a\x7fb", CONTROL, id="del"),
    pytest.param("a\x85b", CONTROL, id="c1-next-line"),
    pytest.param("a\x9fb", CONTROL, id="c1-last"),
    # bidi controls and invisible characters
    pytest.param("a\u200eb", CONTROL, id="lrm"),
    pytest.param("a\u200fb", CONTROL, id="rlm"),
    pytest.param("a\u202ab", CONTROL, id="lre"),
    pytest.param("a\u202bb", CONTROL, id="rle"),
    pytest.param("a\u202cb", CONTROL, id="pdf"),
    pytest.param("a\u202db", CONTROL, id="lro"),
    pytest.param("evil\u202etxt.exe", CONTROL, id="rlo"),
    pytest.param("a\u2066b", CONTROL, id="lri"),
    pytest.param("a\u2067b", CONTROL, id="rli"),
    pytest.param("a\u2068b", CONTROL, id="fsi"),
    pytest.param("a\u2069b", CONTROL, id="pdi"),
    pytest.param("a\u2028b", CONTROL, id="line-separator"),
    pytest.param("a\u2029b", CONTROL, id="paragraph-separator"),
    pytest.param("\ufeffa", CONTROL, id="bom"),
    # U+061C ARABIC LETTER MARK has the Unicode Bidi_Control property like LRM/RLM.
    pytest.param("a\u061cb", CONTROL, id="arabic-letter-mark-bidi"),
    # drive letters
    pytest.param("C:", DRIVE, id="drive"),
    pytest.param("c:", DRIVE, id="drive-lower"),
    pytest.param("C:/Windows/win.ini", DRIVE, id="drive-path"),
    pytest.param("C:win.ini", DRIVE, id="drive-relative"),
    pytest.param("a/Z:", DRIVE, id="drive-inner-segment"),
    pytest.param("C%3a/Windows", DRIVE, id="drive-encoded-colon"),
    pytest.param("\uff43:/x", DRIVE, id="drive-fullwidth-letter"),
    # percent-encoded forms (every decoding round must pass the grammar)
    pytest.param("%2e%2e/etc/passwd", DOT_SEGMENT, id="encoded-dotdot"),
    pytest.param("%2E%2E%2Fetc", DOT_SEGMENT, id="encoded-dotdot-upper"),
    pytest.param("a/%2e", DOT_SEGMENT, id="encoded-dot"),
    pytest.param("..%2fetc", DOT_SEGMENT, id="encoded-slash-after-dotdot"),
    pytest.param("a%2f..%2f..%2fb", DOT_SEGMENT, id="encoded-slashes-hide-dotdot"),
    pytest.param("%252e%252e%252fetc", DOT_SEGMENT, id="double-encoded"),
    pytest.param("%25252e%25252e%25252fetc", DOT_SEGMENT, id="triple-encoded"),
    pytest.param("%2fetc/passwd", ABSOLUTE, id="encoded-leading-slash"),
    pytest.param("a%2f%2fb", EMPTY_SEGMENT, id="encoded-double-slash"),
    pytest.param("a%00b", CONTROL, id="encoded-nul"),
    pytest.param("a%2500b", CONTROL, id="double-encoded-nul"),
    pytest.param("a%0ab", CONTROL, id="encoded-newline"),
    pytest.param("a%e2%80%aeb", CONTROL, id="encoded-rlo"),
    pytest.param("a%5cb", FORBIDDEN, id="encoded-backslash"),
    pytest.param("%5c..%5c..%5cetc", FORBIDDEN, id="encoded-backslash-traversal"),
    pytest.param("a%23b", FORBIDDEN, id="encoded-hash"),
    pytest.param("a%3bb", FORBIDDEN, id="encoded-semicolon"),
    pytest.param("a%3fb", FORBIDDEN, id="encoded-question-mark"),
    pytest.param("%c0%ae%c0%ae/etc", BAD_DECODED_UTF8, id="overlong-utf8-dot"),
    pytest.param("%ff", BAD_DECODED_UTF8, id="encoded-invalid-utf8"),
    pytest.param("%" + "25" * 7 + "41", OVER_ENCODED, id="percent-encoded-8-times"),
    # Unicode compatibility (NFKC) forms
    pytest.param("\uff0e\uff0e\uff0fetc\uff0fpasswd", DOT_SEGMENT, id="fullwidth-dots-and-slash"),
    pytest.param("a/\uff0e\uff0e/b", DOT_SEGMENT, id="fullwidth-dotdot-segment"),
    pytest.param("a/\u2024\u2024/b", DOT_SEGMENT, id="one-dot-leaders"),
    pytest.param("a/\u2025/b", DOT_SEGMENT, id="two-dot-leader"),
    pytest.param("\uff0fetc", ABSOLUTE, id="fullwidth-leading-slash"),
    pytest.param("a\uff3cb", FORBIDDEN, id="fullwidth-backslash"),
    pytest.param("a\uff03b", FORBIDDEN, id="fullwidth-hash"),
    pytest.param("a\ufe56b", FORBIDDEN, id="small-question-mark"),
    pytest.param("%ef%bc%8e%ef%bc%8e/etc", DOT_SEGMENT, id="encoded-fullwidth-dots"),
    # A reading that NFKC-normalises and then percent-decodes: fullwidth `%2e` is `%2e` after NFKC.
    pytest.param(
        "\uff05\uff12\uff45\uff05\uff12\uff45\uff0fetc\uff0fpasswd",
        DOT_SEGMENT,
        id="fullwidth-percent-escapes",
    ),
    # sizes
    pytest.param(_path_of_bytes(MAX_PATH_BYTES + 1), TOO_LONG, id="path-1025-bytes"),
    pytest.param("模" * 342, TOO_LONG, id="path-1026-bytes-3-byte-chars"),
    pytest.param(_LONG_SEGMENT, SEGMENT_TOO_LONG, id="segment-256-bytes"),
    pytest.param("a/" + "é" * 128, SEGMENT_TOO_LONG, id="segment-256-bytes-2-byte-chars"),
    pytest.param("😀" * 64, SEGMENT_TOO_LONG, id="segment-256-bytes-4-byte-chars"),
    pytest.param("/".join(["d"] * (MAX_DEPTH + 1)), TOO_DEEP, id="depth-129"),
    # reserved names
    pytest.param(".artifactd-upload-x", RESERVED, id="reserved-temp-name"),
    pytest.param("a/.artifactd-upload-0123", RESERVED, id="reserved-inner-segment"),
    pytest.param(RESERVED_PREFIX, RESERVED, id="reserved-prefix-alone"),
    pytest.param(".artifactd-upload-x/b", RESERVED, id="reserved-directory"),
    # Every decoded and normalised reading obeys the same rules, the reserved prefix included.
    pytest.param("%2eartifactd-upload-x", RESERVED, id="reserved-percent-encoded-dot"),
    pytest.param("\uff0eartifactd-upload-x", RESERVED, id="reserved-fullwidth-dot"),
    # encoding
    pytest.param("a\ud800b", BAD_UTF8, id="lone-surrogate"),
]


@pytest.mark.parametrize(("raw", "reason"), INVALID)
def test_invalid_paths_are_refused_with_their_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidPath) as caught:
        parse(raw)
    assert reason in caught.value.message
    if raw:  # only the empty path becomes valid (the root) where the root is allowed
        with pytest.raises(InvalidPath) as caught:
            parse(raw, allow_root=True)
        assert reason in caught.value.message


@pytest.mark.parametrize("value", [None, b"a/b", 3, ["a"], ArtifactPath(("a",))])
def test_non_strings_are_refused(value: object) -> None:
    with pytest.raises(InvalidPath, match="must be a string"):
        parse(value)  # type: ignore[arg-type]


def test_invalid_path_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse("../x")
    assert isinstance(caught.value, ArtifactError)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_message_quotes_the_path_and_the_decoded_reading() -> None:
    with pytest.raises(InvalidPath) as caught:
        parse("%252e%252e/x")
    assert "%252e%252e/x" in caught.value.message
    assert "read as '../x'" in caught.value.message


def test_message_names_what_was_parsed() -> None:
    with pytest.raises(InvalidPath) as caught:
        parse("a/../b", what="destination")
    assert caught.value.message.startswith("destination ")


# -- the root -------------------------------------------------------------------------------


def test_empty_path_is_the_root_only_when_allowed() -> None:
    with pytest.raises(InvalidPath, match="is empty"):
        parse("")
    root = parse("", allow_root=True)
    assert root == ROOT
    assert root.is_root
    assert root.parts == ()
    assert str(root) == ""
    assert root.name == ""


def test_root_is_not_a_spelling_of_slash_or_dot() -> None:
    for raw in ("/", ".", "./", "%2f", "%2e"):
        with pytest.raises(InvalidPath):
            parse(raw, allow_root=True)


# -- ArtifactPath operations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "base", "expected"),
    [
        pytest.param("foo/x", "foo", True, id="child"),
        pytest.param("foo/x/y", "foo", True, id="grandchild"),
        pytest.param("foo", "foo", True, id="itself"),
        pytest.param("foo", "", True, id="under-root"),
        pytest.param("", "", True, id="root-under-root"),
        pytest.param("foobar", "foo", False, id="string-prefix-sibling"),
        pytest.param("foobar/x", "foo", False, id="string-prefix-sibling-child"),
        pytest.param("foo.bak/x", "foo", False, id="string-prefix-with-dot"),
        pytest.param("foo", "foo/x", False, id="parent-not-under-child"),
        pytest.param("", "foo", False, id="root-not-under-foo"),
        pytest.param("a/foo", "foo", False, id="suffix-match"),
        pytest.param("foo/ba", "foo/bar", False, id="partial-last-segment"),
    ],
)
def test_is_relative_to_is_segment_wise(path: str, base: str, expected: bool) -> None:
    assert parse(path, allow_root=True).is_relative_to(parse(base, allow_root=True)) is expected


def test_relative_to() -> None:
    assert parse("foo/a/b").relative_to(parse("foo")) == ("a", "b")
    assert parse("foo").relative_to(parse("foo")) == ()
    assert parse("foo").relative_to(ROOT) == ("foo",)
    with pytest.raises(ValueError, match="not under"):
        parse("foobar/x").relative_to(parse("foo"))


def test_parent_and_name() -> None:
    path = parse("a/b/c.txt")
    assert path.name == "c.txt"
    assert path.parent == parse("a/b")
    assert path.parent.parent.parent == ROOT
    assert parse("a").parent.is_root


def test_child_appends_a_checked_segment() -> None:
    assert parse("a").child("b") == parse("a/b")
    assert ROOT.child("b") == parse("b")
    assert parse("a").child("模型.bin").parts == ("a", "模型.bin")
    for bad in ("..", ".", "", "x\\y", "%2e%2e", ".artifactd-upload-1", "x\x00"):
        with pytest.raises(InvalidPath):
            parse("a").child(bad)
    with pytest.raises(InvalidPath):
        ROOT.child("..")


def test_join_reparses_the_tail() -> None:
    base = parse("runs/1")
    assert join(base, "model", "weights.bin") == parse("runs/1/model/weights.bin")
    assert join(base, "model/weights.bin") == parse("runs/1/model/weights.bin")
    assert join(ROOT, "x") == parse("x")
    assert join(base) == base
    assert join(base, "") == base
    assert join(ROOT) == ROOT
    for bad in ("..", "../x", "/etc", "a//b", "a\\b", "%2e%2e", "C:", "\uff0e\uff0e"):
        with pytest.raises(InvalidPath):
            join(base, bad)
    with pytest.raises(InvalidPath):
        join(base, "a", "..")


def test_join_enforces_the_limits_on_the_whole_path() -> None:
    base = parse("/".join(["d"] * (MAX_DEPTH - 1)))
    assert len(join(base, "x").parts) == MAX_DEPTH
    with pytest.raises(InvalidPath, match="segments"):
        join(base, "x", "y")
    long_base = parse(_path_of_bytes(MAX_PATH_BYTES - 2))
    assert join(long_base, "x")  # 1024 bytes
    with pytest.raises(InvalidPath, match="bytes long"):
        join(long_base, "xy")


def test_paths_are_immutable_values() -> None:
    path = parse("a/b")
    assert path == parse("a/b")
    assert hash(path) == hash(parse("a/b"))
    assert sorted([parse("b"), parse("a/z"), parse("a")]) == [parse("a"), parse("a/z"), parse("b")]
    with pytest.raises(dataclasses.FrozenInstanceError):
        path.parts = ("..",)  # type: ignore[misc]
