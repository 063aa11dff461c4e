"""Sample quality over a setting's seeds (the scores `engine.quality` stored with each run),
and when a setting's samples count as like the data (docs/QUALITY.md)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from diffbench.engine.vocabulary import QUALITY_SCORES

if TYPE_CHECKING:
    from diffbench.storage.results import RunResult

#: Scores of `engine.quality.QualityScores`, in the report's order.
QUALITY_KEYS = tuple(score.key for score in QUALITY_SCORES)
#: The scores whose definition runs scored before the sampler settings were recorded (no
#: ``sampler`` key) share with today's; their spectrum and dynamics errors were defined
#: otherwise (relative L2 of log spectra; no mean removal, no CFL refinement) and are left out.
LEGACY_KEYS = ("vorticity_w1", "divergence_ratio")


def legacy(quality: Mapping[str, Any]) -> bool:
    """Scored before the sampler settings were recorded (see `LEGACY_KEYS`)."""
    return "sampler" not in quality


def _means(scores: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, float]:
    """Mean of each key over the scores that hold it finite (NaN, ∞: not a value)."""
    means = {}
    for key in keys:
        values = [float(q[key]) for q in scores
                  if isinstance(q.get(key), int | float) and math.isfinite(q[key])]
        if values:
            means[key] = float(np.mean(values))
    return means


@dataclass(frozen=True)
class QualitySummary:
    """Sample quality over a setting's measured seeds: today's scores when any seed has
    them, else the `LEGACY_KEYS` of older ones."""

    means: dict[str, float]
    seeds: int
    floor: dict[str, float]
    sampler: dict[str, Any] | None


def quality_summary(runs: Sequence[RunResult]) -> QualitySummary:
    measured = [r.quality for r in runs if r.quality]
    current = [q for q in measured if not legacy(q)]
    if not current:
        return QualitySummary(_means(measured, LEGACY_KEYS), len(measured), {}, None)
    floors = [q["floor"] for q in current if isinstance(q.get("floor"), dict)]
    settings = {json.dumps(q["sampler"], sort_keys=True) for q in current}
    return QualitySummary(_means(current, QUALITY_KEYS), len(current),
                          _means(floors, QUALITY_KEYS),
                          current[0]["sampler"] if len(settings) == 1 else None)


#: "Like data" (docs/QUALITY.md): a velocity std within this factor of the data's, ...
STD_TOLERANCE = 1.5
#: ... spectrum error and vorticity W1 within this factor of the data-vs-data floor, and a
#: finite dynamics score.
FLOOR_FACTOR = 3.0


def unlike_data(quality: Mapping[str, float], floor: Mapping[str, float]) -> list[str]:
    """What keeps a setting's mean scores from "like data"; empty when they are (or when no
    floor was measured to judge against)."""
    if not floor:
        return []
    reasons = []
    std = quality.get("std_ratio")
    if std is not None and not 1 / STD_TOLERANCE <= std <= STD_TOLERANCE:
        reasons.append(f"velocity std {std:.2f}× the data's")
    for key, name in (("spectrum_error", "spectrum error"), ("vorticity_w1", "vorticity W1")):
        value, bound = quality.get(key), floor.get(key)
        if value is not None and bound and value > FLOOR_FACTOR * bound:
            reasons.append(f"{name} {value / bound:.1f}× the data-vs-data floor")
    if "dynamics_error" not in quality:
        reasons.append("dynamics not measurable (no pair the solver can advance)")
    return reasons
