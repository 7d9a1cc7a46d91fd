"""The one parser of integer parameters that arrive as text or JSON: query args, form fields,
JSON bodies. The API, the service's pages and the user's client app all check with it."""

from __future__ import annotations

import re
from typing import Any

_INT = re.compile(r"[+-]?\d{1,18}")


def parse_int(name: str, raw: Any, default: int | None, lo: int, hi: int) -> int | None:
    """``raw`` (a string of digits or a JSON int) as an int in [lo, hi]; ``default`` when absent.

    Absent means None or "". Booleans, floats and anything outside the range raise ValueError
    with the name, the range and the value, e.g. ``radius must be an int in [0, 32]; got '60'``.
    """
    if raw is None or raw == "":
        return default
    value = None
    if isinstance(raw, str) and _INT.fullmatch(raw.strip()):
        value = int(raw.strip())
    elif isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    if value is None or not lo <= value <= hi:
        raise ValueError(f"{name} must be an int in [{lo}, {hi}]; got {raw!r}")
    return value
