"""The runtime pane's cost table, Textual-free: each optimizer's ms per step and its ratio to
AdamW's, only where they compare (`storage.step_ratios`: the selected run's device *and*
preset), from the newest calibration of that device and preset when there is one, else from
the runs' own step times with the caveat when runs shared a machine while they were timed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from diffbench.storage.calibration import Calibration
from diffbench.storage.step_ratios import CALIBRATION, RUNS, SHARED, Spread, runs_ratio

from .state import RunView

BASELINE = "adamw"


@dataclass(frozen=True)
class StepCost:
    optimizer: str
    ms_per_step: float
    spread: float | None  # sample std over the calibration's rounds, or over runs
    samples: int  # rounds or runs
    ratio: Spread | None  # to AdamW; None without AdamW here


@dataclass(frozen=True)
class CostTable:
    """What the pane shows for the selected run: ``rows`` (fastest first) measured by
    ``source`` on ``device`` and ``preset``, and notes (caveats, what was left out)."""

    device: str | None = None
    preset: str | None = None
    source: str | None = None  # CALIBRATION or RUNS; None: nothing to compare
    rows: tuple[StepCost, ...] = ()
    notes: tuple[str, ...] = ()
    calibration: Calibration | None = None


def step_costs(runs: Iterable[RunView], selected: RunView | None,
               calibrations: Mapping[tuple[str, str], Calibration]) -> CostTable:
    """The cost table for ``selected``'s device and preset."""
    if selected is None or selected.device_key is None:
        return CostTable()
    key = (selected.device_key, selected.preset)
    calibration = calibrations.get(key)
    if calibration is not None:
        base = calibration.time(BASELINE)
        rows = tuple(StepCost(t.optimizer, t.ms_per_step, t.ms_std, len(t.rounds_ms),
                              None if base is None else
                              calibration.ratio(t.optimizer, BASELINE))
                     for t in sorted(calibration.times, key=lambda t: t.ms_per_step))
        return CostTable(*key, CALIBRATION, rows, calibration=calibration)
    by_optimizer: dict[str, list[RunView]] = {}
    other = 0
    for run in runs:
        if run.ms_per_step is None or run.device_key is None:
            continue
        if (run.device_key, run.preset) == key:
            by_optimizer.setdefault(run.optimizer, []).append(run)
        else:
            other += 1
    base_ms = [r.ms_per_step for r in by_optimizer.get(BASELINE, ())]
    rows = []
    for name, members in by_optimizer.items():
        ms = [r.ms_per_step for r in members]
        rows.append(StepCost(name, statistics.fmean(ms),
                             statistics.stdev(ms) if len(ms) > 1 else None, len(ms),
                             runs_ratio(ms, base_ms) if base_ms else None))
    notes = []
    if any(r.shared for members in by_optimizer.values() for r in members):
        notes.append(f"⚠ {SHARED}")
    notes.append(f"no calibration: diffbench calibrate -p {selected.preset}")
    if other:
        notes.append(f"{other} runs on other devices or presets: not comparable")
    return CostTable(*key, RUNS, tuple(sorted(rows, key=lambda r: r.ms_per_step)),
                     tuple(notes))
