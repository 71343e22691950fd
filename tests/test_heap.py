"""When a server hands its free heap back to the kernel (`artifactd.protocol.malloc.IdleTrim`):
only once no stream is left and enough bytes moved, so small-file traffic never pays for it and
no transfer is slowed by it. The trims are glibc's own `malloc_trim`, called for real."""

from __future__ import annotations

from artifactd.protocol.malloc import IdleTrim


def test_the_heap_is_trimmed_only_when_the_last_stream_ends_after_enough_bytes() -> None:
    trim = IdleTrim(after_bytes=100)
    trim.enabled = True
    trim.started()
    trim.started()
    trim.ended(150)
    assert trim.trims == 0, "a stream is still running"
    trim.ended(0)
    assert trim.trims == 1, "the last stream ended after 150 bytes"
    trim.started()
    trim.ended(60)
    assert trim.trims == 1, "60 bytes since the last trim"
    trim.started()
    trim.ended(40)
    assert trim.trims == 2, "100 bytes since the last trim"


def test_a_process_that_did_not_bound_its_heap_is_never_trimmed() -> None:
    trim = IdleTrim(after_bytes=1)
    trim.started()
    trim.ended(10)
    assert trim.trims == 0
