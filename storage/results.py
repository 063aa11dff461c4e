"""Results of a study: finished runs and their curves out of the job database, and the
aggregation the report prints, as pure functions over plain dataclasses.

Reading (`load_runs`, `last_sample_ids`) is the only part that touches the database;
everything else takes `RunResult`s and returns numbers, so tests can feed it by hand.

The rules (docs/REPORT.md says the same for users):

- A run's *final loss* is its last fixed-noise validation loss (same t, ε and windows for
  every run, so runs are comparable). Only ``done`` runs are aggregated; the others are
  counted in the caveats.
- A *setting* is preset × optimizer × schedule × epochs × lr × weight decay × overrides;
  its seeds give mean ± std (sample std, ddof 1; none for one seed).
- A *row* is preset × optimizer × schedule × epochs; its *best setting* has the lowest
  mean final loss.
- Each row is compared with a *baseline*: AdamW with linear decay (the paper's default)
  of the same preset and epochs, else AdamW's best row of that preset and epochs, else of
  that preset (fewest epochs apart first). Against it: the loss difference in %, the step
  time ratio (same device and preset only, a calibration first: `storage.step_ratios`), and
  the training time at which the row's seed-mean curve first reaches the baseline's mean
  final loss (∞ if it never does).
- Training time: steps × the calibrated ms/step where a calibration of the run's device,
  preset and optimizer exists (``RunResult.timed_by``), else the run's measured step times.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa

from diffbench.storage import calibration as calibrations
from diffbench.storage import reads, step_ratios
from diffbench.storage.db import Database
from diffbench.storage.filters import RunFilter, filtered_runs
from diffbench.storage.runs import Run
from diffbench.storage.sample_quality import quality_summary
from diffbench.storage.schema import EpochMetricRow, SampleRow, join_float
from diffbench.storage.states import Status
from diffbench.storage.step_ratios import (
    CALIBRATION,
    RUNS,
    StepRatio,
    device_label,
    shared_machine,
    step_ratio,
)

BASELINE = "adamw"
# ----------------------------------------------------------------------------- values


@dataclass(frozen=True)
class CurvePoint:
    """One validated epoch: cumulative training time (steps only) and the fixed-noise loss."""

    epoch: int
    train_s: float
    loss: float
    step: int = 0  # steps done at the end of the epoch


@dataclass(frozen=True)
class RunResult:
    """What the report needs of one run."""

    id: int
    status: str
    preset: str
    optimizer: str
    schedule: str
    lr: float
    weight_decay: float
    seed: int
    epochs: int | None
    overrides: str  # canonical JSON of the training overrides (not BOOKKEEPING), "" when none
    tags: tuple[str, ...]
    device: str | None  # "cuda · NVIDIA H100 80GB HBM3", "cpu · x86_64"
    ms_per_step: float | None
    train_s: float | None
    quality: dict[str, Any] | None
    curve: tuple[CurvePoint, ...] = ()
    error: str | None = None
    bins: tuple[float, ...] | None = None  # the last fixed-noise loss per t-bin, if measured
    loss_bins: tuple[float, ...] | None = None  # the t-bins' edges (`Run.loss_bins`)
    host: str | None = None
    shared: bool = False  # trained while another run trained on its host (`shared_machine`)
    timed_by: str = RUNS  # the curve's time axis: "calibration" (steps × ms) or "runs"

    @property
    def device_key(self) -> str | None:
        return self.device

    @property
    def final_loss(self) -> float | None:
        return self.curve[-1].loss if self.curve else None

    @property
    def setting(self) -> tuple[Any, ...]:
        return (*self.row, self.lr, self.weight_decay, self.overrides)

    @property
    def row(self) -> tuple[str, str, str, int | None]:
        return (self.preset, self.optimizer, self.schedule, self.epochs)


def _epochs(run: Run) -> int | None:
    if run.epochs is not None:
        return run.epochs
    try:
        return int(run.config["preset"]["train"]["epochs"])  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return None


def _number(summary: dict[str, Any], key: str) -> float | None:
    value = summary.get(key)
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def load_runs(db: Database, run_filter: RunFilter | None = None) -> list[RunResult]:
    """Every run the filter admits (any status); curves and last per-bin losses for the
    ``done`` ones, read in one query of the epoch table (never the step table); whether each
    shared its host with another run (of any filter); calibrated time axes where possible."""
    runs = filtered_runs(db, run_filter)
    done = [r.id for r in runs if r.status == Status.DONE]
    curves: dict[int, list[CurvePoint]] = defaultdict(list)
    bins: dict[int, tuple[float, ...]] = {}
    with db.session() as session:
        for chunk in range(0, len(done), 500):
            rows = session.execute(
                sa.select(EpochMetricRow.run_id, EpochMetricRow.epoch, EpochMetricRow.train_s,
                          EpochMetricRow.fixed_valid_loss, EpochMetricRow.fixed_valid_loss_kind,
                          EpochMetricRow.fixed_valid_bins, EpochMetricRow.step)
                .where(EpochMetricRow.run_id.in_(done[chunk:chunk + 500]))
                .order_by(EpochMetricRow.run_id, EpochMetricRow.epoch, EpochMetricRow.id))
            for run_id, epoch, train_s, loss, kind, losses, step in rows:
                value = join_float(loss, kind)
                if value is not None:
                    curves[run_id].append(CurvePoint(epoch, float(train_s or 0.0), value, step))
                if losses is not None:
                    bins[run_id] = tuple(losses)
        placements = reads.run_placements(session)
        table = calibrations.latest(calibrations.read_calibrations(session))
    shared = shared_machine(placements)
    out = []
    for run in runs:
        summary = run.summary or {}
        quality = summary.get("quality")
        device = device_label(run.provenance)
        ms = calibrations.calibrated_ms(table, device, run.preset, run.optimizer)
        curve = tuple(curves.get(run.id, ()))
        if ms is not None:
            curve = tuple(dataclasses.replace(p, train_s=p.step * ms / 1000) for p in curve)
        out.append(RunResult(
            id=run.id, status=run.status.value, preset=run.preset, optimizer=run.optimizer,
            schedule=run.schedule, lr=run.lr, weight_decay=run.weight_decay, seed=run.seed,
            epochs=_epochs(run), overrides=_scientific(run.overrides), tags=run.tags,
            device=device,
            ms_per_step=_number(summary, "ms_per_step"), train_s=_number(summary, "train_s"),
            quality=quality if isinstance(quality, dict) else None,
            curve=curve, error=run.error, bins=bins.get(run.id),
            loss_bins=None if run.loss_bins is None else tuple(run.loss_bins),
            host=(run.provenance or {}).get("host"), shared=run.id in shared,
            timed_by=RUNS if ms is None else CALIBRATION))
    return out


def last_sample_ids(db: Database, run_ids: Sequence[int], name: str = "vorticity"
                    ) -> dict[int, int]:
    """The newest stored sample of each run (``queue.get_sample`` fetches its array)."""
    if not run_ids:
        return {}
    with db.session() as session:
        rows = session.execute(
            sa.select(SampleRow.run_id, sa.func.max(SampleRow.id))
            .where(SampleRow.run_id.in_(list(run_ids)), SampleRow.name == name)
            .group_by(SampleRow.run_id))
        return {run_id: sample_id for run_id, sample_id in rows}


# ----------------------------------------------------------------------------- statistics


# Overrides that change what a run records, not what it trains: runs differing only in
# these are seeds of one setting, and a label does not show them.
BOOKKEEPING = ("train.samples_every", "train.sample_count", "train.sample_steps",
               "train.checkpoint_every", "train.valid_every", "quality.", "compile",
               "cuda_graph", "channels_last")


def _scientific(overrides: dict[str, Any] | None) -> str:
    """Canonical JSON of the overrides that change training ("" when none)."""
    kept = {k: v for k, v in (overrides or {}).items() if not k.startswith(BOOKKEEPING)}
    return json.dumps(kept, sort_keys=True) if kept else ""


def short(value: float) -> str:
    """A hyperparameter as people write it: ``4.5e-4``, ``1e-3``, ``0.01``, ``0.032``."""
    mantissa, exponent = f"{value:.3e}".split("e")
    if -3 < int(exponent) < 3:
        return f"{value:g}"
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; None for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        raise ValueError("mean_std of no values")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None


def mean_curve(runs: Sequence[RunResult]) -> tuple[CurvePoint, ...]:
    """The seeds' mean curve over the epochs every seed validated (time and loss means)."""
    if not runs:
        return ()
    common = set.intersection(*({p.epoch for p in r.curve} for r in runs))
    by_epoch: dict[int, list[CurvePoint]] = defaultdict(list)
    for run in runs:
        for point in run.curve:
            if point.epoch in common:
                by_epoch[point.epoch].append(point)
    return tuple(CurvePoint(e, float(np.mean([p.train_s for p in by_epoch[e]])),
                            float(np.mean([p.loss for p in by_epoch[e]])))
                 for e in sorted(common))


def time_to_target(curve: Sequence[CurvePoint], target: float) -> float:
    """Training time of the first point at or below ``target``; ∞ if none is."""
    return next((p.train_s for p in curve if p.loss <= target), math.inf)


@dataclass(frozen=True)
class BinnedLoss:
    """Seeds' final fixed-noise loss per t-bin: the bins' edges, the mean and sample std
    (None for one seed) of each bin over ``seeds`` runs."""

    edges: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...] | None
    seeds: int


def binned_loss(runs: Sequence[RunResult]) -> BinnedLoss | None:
    """Mean and std per t-bin over the runs that measured the bins on the edges of the first
    one that did (one bin per pair of edges); None when none did (runs from before)."""
    measured = [r for r in runs if r.bins is not None and r.loss_bins is not None
                and len(r.loss_bins) == len(r.bins) + 1]
    if not measured:
        return None
    edges = measured[0].loss_bins
    same = [r.bins for r in measured if r.loss_bins == edges]
    stats = [mean_std(values) for values in zip(*same, strict=True)]
    return BinnedLoss(edges, tuple(m for m, _ in stats),
                      tuple(s for _, s in stats) if len(same) > 1 else None, len(same))


# ----------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class SettingStats:
    """One setting's finished seeds."""

    runs: tuple[RunResult, ...]
    mean: float
    std: float | None

    @property
    def first(self) -> RunResult:
        return self.runs[0]

    @property
    def seeds(self) -> int:
        return len(self.runs)

    def label(self) -> str:
        run = self.first
        text = f"lr {short(run.lr)}, wd {short(run.weight_decay)}"
        return f"{text}, {run.overrides}" if run.overrides else text


def settings(runs: Iterable[RunResult]) -> list[SettingStats]:
    """Done runs with a final loss, grouped by setting (first-seen order)."""
    groups: dict[tuple[Any, ...], list[RunResult]] = {}
    for run in runs:
        if run.status == Status.DONE.value and run.final_loss is not None:
            groups.setdefault(run.setting, []).append(run)
    out = []
    for members in groups.values():
        members.sort(key=lambda r: (r.seed, r.id))
        finals = [r.final_loss for r in members]
        if all(math.isfinite(f) for f in finals):
            out.append(SettingStats(tuple(members), *mean_std(finals)))
    return out


@dataclass(frozen=True)
class Row:
    """One preset × optimizer × schedule × epochs: its best setting against the baseline."""

    preset: str
    optimizer: str
    schedule: str
    epochs: int | None
    best: SettingStats
    settings: tuple[SettingStats, ...]
    baseline: SettingStats | None = None
    vs_baseline_pct: float | None = None
    step: StepRatio | None = None  # ms per step / the baseline's (`step_ratios.step_ratio`)
    time_to_target_s: float | None = None  # None without a baseline; ∞ if never reached
    quality: dict[str, float] = field(default_factory=dict)  # means over measured seeds
    quality_seeds: int = 0
    floor: dict[str, float] = field(default_factory=dict)  # data-vs-data, means over seeds
    sampler: dict[str, Any] | None = None  # the settings of the scores (None: several, or
    # scored before they were recorded)

    @property
    def key(self) -> tuple[str, str, str, int | None]:
        return (self.preset, self.optimizer, self.schedule, self.epochs)

    @property
    def curve(self) -> tuple[CurvePoint, ...]:
        return mean_curve(self.best.runs)

    @property
    def step_ratio(self) -> float | None:
        """The ratio's value where it compares, else None."""
        return None if self.step is None or self.step.ratio is None else self.step.ratio.value

    @property
    def step_device(self) -> str | None:
        return None if self.step is None else self.step.device

    @property
    def binned(self) -> BinnedLoss | None:
        """The best setting's final loss per t-bin over its seeds."""
        return binned_loss(self.best.runs)


def _pick_baseline(row: Row, rows: Sequence[Row]) -> Row | None:
    candidates = [r for r in rows if r.optimizer == BASELINE and r.preset == row.preset]
    if not candidates:
        return None
    return min(candidates, key=lambda r: (abs((r.epochs or 0) - (row.epochs or 0)),
                                          r.schedule != "linear",
                                          r.best.mean))


def summarize(runs: Iterable[RunResult], calibrated: step_ratios.Calibrations | None = None
              ) -> list[Row]:
    """The report's main table: one `Row` per preset × optimizer × schedule × epochs that
    has a finished setting, in preset, optimizer (AdamW first), schedule, epochs order;
    step ratios from the ``calibrated`` (the newest per device and preset) where they can."""
    grouped: dict[tuple[Any, ...], list[SettingStats]] = defaultdict(list)
    for stats in settings(runs):
        grouped[stats.first.row].append(stats)
    plain = []
    for members in grouped.values():
        run = members[0].first
        members.sort(key=lambda s: (s.first.lr, s.first.weight_decay, s.first.overrides))
        best = min(members, key=lambda s: s.mean)
        quality = quality_summary(best.runs)
        plain.append(Row(run.preset, run.optimizer, run.schedule, run.epochs, best,
                         tuple(members), quality=quality.means, quality_seeds=quality.seeds,
                         floor=quality.floor, sampler=quality.sampler))
    rows = []
    for row in plain:
        base = _pick_baseline(row, plain)
        if base is None:
            rows.append(row)
            continue
        rows.append(dataclasses.replace(
            row, baseline=base.best,
            vs_baseline_pct=100.0 * (row.best.mean / base.best.mean - 1.0),
            step=step_ratio(row.best.runs, base.best.runs, calibrated),
            time_to_target_s=time_to_target(row.curve, base.best.mean)))
    return sorted(rows, key=lambda r: (r.preset, r.optimizer != BASELINE, r.optimizer,
                                       r.schedule, r.epochs or 0))


# ----------------------------------------------------------------------------- caveats


@dataclass(frozen=True)
class Caveats:
    """What a reader must know before trusting the table."""

    statuses: dict[str, int]  # every filtered run by status
    seeds: tuple[int, int]  # fewest and most finished seeds of a best setting
    devices: tuple[str, ...]  # devices of the finished runs
    unknown_device: int  # finished runs without a recorded device
    presets: tuple[str, ...]
    not_done: tuple[RunResult, ...]  # failed, diverged, cancelled, queued, running


def caveats(runs: Sequence[RunResult], rows: Sequence[Row]) -> Caveats:
    done = [r for r in runs if r.status == Status.DONE.value]
    seeds = [r.best.seeds for r in rows] or [0]
    return Caveats(
        statuses=dict(Counter(r.status for r in runs)),
        seeds=(min(seeds), max(seeds)),
        devices=tuple(sorted({r.device for r in done if r.device})),
        unknown_device=sum(r.device is None for r in done),
        presets=tuple(sorted({r.preset for r in runs})),
        not_done=tuple(r for r in runs if r.status != Status.DONE.value))


