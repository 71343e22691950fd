"""Durations in MLflow's `--older-than` format: `#d#h#m#s`, for example `1.5d2h`, `30m`, `10s`.

Each unit appears at most once, in the order d, h, m, s; the numbers are decimal and may have a
fraction (`1.5d`, `.5h`); units are lower case (`1M` is refused, not read as minutes or months).
Anything else is refused with what was expected, rather than read as something the user did not
mean: garbage collection deletes what it matches.
"""

from __future__ import annotations

import math
import re

from artifactd.protocol.errors import InvalidArgument

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_DURATION = re.compile(
    rf"(?:(?P<d>{_NUMBER})d)?(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s)?"
)
_SECONDS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
FORMAT_HELP = "#d#h#m#s, e.g. 1d2h, 1.5d, 30m, 10s (units at most once, in the order d, h, m, s)"


def parse_duration(text: str) -> float:
    """Seconds in `text` (`#d#h#m#s`); `InvalidArgument` naming the expected format otherwise."""
    compact = text.strip() if isinstance(text, str) else ""
    match = _DURATION.fullmatch(compact) if compact else None
    if match is None or not any(match.groupdict().values()):
        raise InvalidArgument(f"{text!r} is not a duration; expected {FORMAT_HELP}")
    seconds = sum(
        float(value) * _SECONDS[unit] for unit, value in match.groupdict().items() if value
    )
    if not math.isfinite(seconds):
        raise InvalidArgument(f"{text!r} is too long a duration")
    return seconds
