"""Strict JSON that keeps non-finite floats: NaN and ±inf travel as the strings "NaN",
"Infinity" and "-Infinity" (the spellings Python's json module writes when it is lax).

A diverged run's losses are NaN or inf; run folders (`engine/metrics`) and the job
database (`storage/schema`) both keep them this way, so one definition serves both. Plain
Python, no torch: storage may import it.
"""

from __future__ import annotations

import math
from typing import Any

_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode(value: Any) -> Any:
    """``value`` with non-finite floats as strings, tuples as lists, keys as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


def decode(value: Any) -> Any:
    """The inverse of `encode` on parsed JSON (tuples come back as lists)."""
    if isinstance(value, str):
        return _NONFINITE.get(value, value)
    if isinstance(value, dict):
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value
