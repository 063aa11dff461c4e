"""Per-run curves for the plots: step and epoch metrics read with `metrics_since`, kept
between refreshes, and binned to a few hundred points (no Textual here).

Wall time on the x axis is *training* time: the cumulative sum of each step's data,
compute and optimizer milliseconds (validation and sampling excluded), which is also what
an epoch's ``train_s`` counts, so train and validation points share one clock.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

import numpy as np

from diffbench.storage import queue, records
from diffbench.storage.db import Database, NotFound
from diffbench.storage.records import MetricsCursor

POINTS = 300  # points per plotted line: more than a terminal has columns


@dataclass(frozen=True)
class Curve:
    x: tuple[float, ...]
    y: tuple[float, ...]


@dataclass(frozen=True)
class RunCurves:
    """What the plots of one run need, ready to draw."""

    run_id: int
    train_by_step: Curve
    train_by_time: Curve
    valid_by_step: Curve
    valid_by_time: Curve
    compute_ms: Curve  # forward + backward, by step
    optimizer_ms: Curve  # optimizer step, by step
    sample_id: int | None  # the latest generated preview
    # the fixed-noise validation loss (what the report ranks by), by step and by time
    fixed_by_step: Curve = Curve((), ())
    fixed_by_time: Curve = Curve((), ())
    steps_per_epoch: int | None = None  # from the first epoch row (None before one)
    loss_bins: tuple[float, ...] | None = None  # the t-bins' edges (`Run.loss_bins`)


def binned(x: np.ndarray, y: np.ndarray, points: int = POINTS, *,
           positive: bool = False) -> Curve:
    """``(x, y)`` without non-finite (and, with ``positive``, non-positive) values, averaged
    in at most ``points`` consecutive bins."""
    keep = np.isfinite(y) & np.isfinite(x)
    if positive:
        keep &= y > 0
    x, y = x[keep], y[keep]
    if len(x) > points:
        edges = np.linspace(0, len(x), points + 1).astype(np.int64)[:-1]
        counts = np.diff(np.append(edges, len(x)))
        x = np.add.reduceat(x, edges) / counts
        y = np.add.reduceat(y, edges) / counts
    return Curve(tuple(float(v) for v in x), tuple(float(v) for v in y))


@dataclass
class _Series:
    cursor: MetricsCursor = field(default_factory=MetricsCursor)
    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    ms: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    optimizer: list[float] = field(default_factory=list)
    epoch_step: list[int] = field(default_factory=list)
    epoch_time: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    fixed: list[float] = field(default_factory=list)  # NaN where an epoch measured none
    per_epoch: int | None = None
    loss_bins: tuple[float, ...] | None = None
    sample_id: int | None = None
    drawn: RunCurves | None = None  # the curves of the rows so far
    complete: bool = False  # read after the run ended: no row can come (until a retry)

    def add(self, batch: records.MetricsBatch) -> None:
        if batch.steps and self.step and batch.steps[0].step <= self.step[-1]:
            self._cut(batch.steps[0].step)  # a resumed run rewrote these steps
        for s in batch.steps:
            self.step.append(s.step)
            self.loss.append(s.loss)
            self.ms.append(s.data_ms + s.compute_ms + s.optimizer_ms)
            self.compute.append(s.compute_ms)
            self.optimizer.append(s.optimizer_ms)
        for e in batch.epochs:
            if self.per_epoch is None and e.step > 0:
                self.per_epoch = e.step // (e.epoch + 1)
            while self.epoch_step and self.epoch_step[-1] >= e.step:
                for column in (self.epoch_step, self.epoch_time, self.valid, self.fixed):
                    column.pop()
            if e.valid_loss is not None or e.fixed_valid_loss is not None:
                self.epoch_step.append(e.step)
                self.epoch_time.append(e.train_s)
                self.valid.append(math.nan if e.valid_loss is None else e.valid_loss)
                self.fixed.append(math.nan if e.fixed_valid_loss is None
                                  else e.fixed_valid_loss)
        if batch.sample_ids:
            self.sample_id = batch.sample_ids[-1]
        self.cursor = batch.cursor

    def _cut(self, first: int) -> None:
        keep = next((i for i, s in enumerate(self.step) if s >= first), len(self.step))
        for column in (self.step, self.loss, self.ms, self.compute, self.optimizer):
            del column[keep:]

    def curves(self, run_id: int) -> RunCurves:
        """The binned curves; the same object as last time when no row came since, so the
        plots can skip redrawing by identity."""
        if self.drawn is None:
            self.drawn = self._bin(run_id)
        return self.drawn

    def _bin(self, run_id: int) -> RunCurves:
        step = np.asarray(self.step, dtype=np.float64)
        wall = np.cumsum(np.asarray(self.ms, dtype=np.float64)) / 1000.0
        loss = np.asarray(self.loss, dtype=np.float64)
        epoch_step = np.asarray(self.epoch_step, dtype=np.float64)
        epoch_time = np.asarray(self.epoch_time, dtype=np.float64)
        valid = np.asarray(self.valid, dtype=np.float64)
        fixed = np.asarray(self.fixed, dtype=np.float64)
        return RunCurves(
            run_id=run_id,
            train_by_step=binned(step, loss, positive=True),
            train_by_time=binned(wall, loss, positive=True),
            valid_by_step=binned(epoch_step, valid, positive=True),
            valid_by_time=binned(epoch_time, valid, positive=True),
            compute_ms=binned(step, np.asarray(self.compute, dtype=np.float64)),
            optimizer_ms=binned(step, np.asarray(self.optimizer, dtype=np.float64)),
            sample_id=self.sample_id,
            fixed_by_step=binned(epoch_step, fixed, positive=True),
            fixed_by_time=binned(epoch_time, fixed, positive=True),
            steps_per_epoch=self.per_epoch, loss_bins=self.loss_bins)


@dataclass
class SeriesCache:
    """Metrics of the runs being plotted, each read incrementally from its own cursor."""

    db: Database
    _series: dict[int, _Series] = field(default_factory=dict)

    def update(self, run_ids: Iterable[int], ended: Collection[int] = ()
               ) -> dict[int, RunCurves]:
        """Read what is new for ``run_ids`` (forgetting runs no longer asked for). A run in
        ``ended`` (finished, failed, …, as of a snapshot taken before this call) is read
        once more and then no longer, until it leaves ``ended`` (a retry)."""
        wanted = list(dict.fromkeys(run_ids))
        self._series = {i: self._series.get(i) or self._new(i) for i in wanted}
        out = {}
        for run_id in wanted:
            series = self._series[run_id]
            if run_id not in ended:
                series.complete = False
            elif series.complete:
                out[run_id] = series.curves(run_id)
                continue
            else:
                series.complete = True
            batch = records.metrics_since(self.db, run_id, series.cursor)
            if batch.steps or batch.epochs or batch.sample_ids:
                series.add(batch)
                series.drawn = None
            out[run_id] = series.curves(run_id)
        return out

    def _new(self, run_id: int) -> _Series:
        """A run's series, with its t-bins' edges (read once: the run's provenance)."""
        try:
            edges = queue.get_run(self.db, run_id).loss_bins
        except NotFound:  # removed since the snapshot: it is gone from the next one
            edges = None
        return _Series(loss_bins=None if edges is None else tuple(edges))
