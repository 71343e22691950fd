"""Property tests of the path grammar (Hypothesis; not in the lowest-versions pass, which has
no development tools): `parse`'s shortcut for plain ASCII paths must agree with the general
check of every reading."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from artifactd.protocol.paths import MAX_SEGMENT_BYTES, InvalidPath, check_every_reading, parse


def _outcome(check: Callable[[str], object], path: str) -> str:
    try:
        check(path)
    except InvalidPath as exc:
        return f"refused: {exc.message}"
    return "accepted"


# Plain ASCII paths skip the general check's readings (percent-decoding, NFKC): the two must
# agree on every ASCII path, the shortcut's own exceptions (%, controls, \ # ; ?) included.
_PIECES = [*"abZ09._-:/ %#;?\\", "\x00", "\x1f", "\x7f", ".artifactd-", "..", "C:"]
_ENCODED = ["%2e", "%2E", "%2f", "%5c", "%25", "%00", "%e2%80%ae", "%ef%bc%8e"]
"""Readings that only percent-decoding or NFKC reveal."""
_ASCII_PATHS = st.lists(st.sampled_from([*_PIECES, *_ENCODED]), min_size=1, max_size=30).map(
    "".join
)


@settings(max_examples=3000, deadline=None)
@given(_ASCII_PATHS)
def test_the_plain_ascii_shortcut_agrees_with_the_general_check(path: str) -> None:
    # the length limits are parse's alone, checked after either way of checking the readings
    assume(all(len(segment) <= MAX_SEGMENT_BYTES for segment in path.split("/")))
    assert _outcome(parse, path) == _outcome(check_every_reading, path)
