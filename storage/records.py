"""The run records: step and epoch metrics, and small arrays (previews, the quality phase's
pictures), written as the trainer yields them and read back by cursor.

One transaction per call, frozen values out (`StepMetric`, `EpochMetric`, `Sample`,
`MetricsBatch`). Non-finite floats are kept as a flag beside the column (`schema.FLAGGED`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from diffbench.storage.db import Database, NotFound
from diffbench.storage.schema import (
    FLAGGED,
    EpochMetricRow,
    RunRow,
    SampleRow,
    StepMetricRow,
    join_float,
    split_float,
)


@dataclass(frozen=True)
class StepMetric:
    id: int
    run_id: int
    step: int
    epoch: int
    loss: float
    lr: float
    grad_norm: float
    data_ms: float
    compute_ms: float
    optimizer_ms: float


@dataclass(frozen=True)
class EpochMetric:
    id: int
    run_id: int
    epoch: int
    step: int
    train_loss: float
    valid_loss: float | None
    fixed_valid_loss: float | None
    epoch_s: float
    valid_s: float
    sample_s: float
    train_s: float
    # the fixed-noise loss per t-bin (edges: the run's provenance["loss_bins"]); None on
    # epochs without validation and rows from before the engine measured it
    fixed_valid_bins: tuple[float, ...] | None = None


@dataclass(frozen=True, eq=False)
class Sample:
    """A stored array; `array()` gives it back as NumPy (imported only then)."""

    id: int
    run_id: int
    epoch: int
    step: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: bytes

    def array(self) -> Any:
        import numpy as np

        return np.frombuffer(self.data, dtype=np.dtype(self.dtype)).reshape(self.shape)


@dataclass(frozen=True)
class MetricsCursor:
    """Where a poller got to: the last step, epoch and sample row ids it has seen."""

    step_id: int = 0
    epoch_id: int = 0
    sample_id: int = 0


@dataclass(frozen=True)
class MetricsBatch:
    """Rows newer than a cursor, and the cursor to pass next time. ``sample_ids``: the
    previews' (samples named ``vorticity``; a sample's bytes are fetched with `get_sample`)."""

    steps: tuple[StepMetric, ...]
    epochs: tuple[EpochMetric, ...]
    sample_ids: tuple[int, ...]
    cursor: MetricsCursor


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _field(record: Any, name: str) -> Any:
    if isinstance(record, Mapping):  # a mapping may leave out what older writers lacked
        return record.get(name) if name in _OPTIONAL_FIELDS else record[name]
    return getattr(record, name)


def _metric_values(table: type, run_id: int, record: Any, names: Sequence[str]
                   ) -> dict[str, Any]:
    values: dict[str, Any] = {"run_id": run_id}
    flagged = FLAGGED[table]
    for name in names:
        value = _field(record, name)
        if name in flagged:
            values[name], values[f"{name}_kind"] = split_float(value)
        elif isinstance(value, list | tuple):  # per-bin losses: a JSON list, NaN kept
            values[name] = [float(v) for v in value]
        elif isinstance(value, float) and not math.isfinite(value):
            values[name] = None  # timings: finite by construction
        else:
            values[name] = value
    return values


_STEP_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "data_ms", "compute_ms",
                "optimizer_ms")
_EPOCH_FIELDS = ("epoch", "step", "train_loss", "valid_loss", "fixed_valid_loss", "epoch_s",
                 "valid_s", "sample_s", "train_s", "fixed_valid_bins")
#: Fields a mapping may leave out (None): the per-bin losses came later than the rest.
_OPTIONAL_FIELDS = frozenset({"fixed_valid_bins"})


def add_step_metrics(db: Database, run_id: int, records: Iterable[Any]) -> int:
    """Insert a batch of step records (`engine.metrics.StepRecord`s or mappings with its
    fields) in one statement, and advance the run's ``steps_done``. The rows written."""
    rows = [_metric_values(StepMetricRow, run_id, r, _STEP_FIELDS) for r in records]
    if not rows:
        return 0
    with db.session(write=True) as session:
        session.execute(sa.insert(StepMetricRow), rows)
        last = max(r["step"] for r in rows)
        session.execute(sa.update(RunRow).where(RunRow.id == run_id, RunRow.steps_done < last)
                        .values(steps_done=last).execution_options(synchronize_session=False))
    return len(rows)


def add_epoch_metrics(db: Database, run_id: int, records: Iterable[Any]) -> int:
    """Insert epoch records (`engine.metrics.EpochRecord`s or mappings; a mapping may leave
    out ``fixed_valid_bins``) in one statement."""
    rows = [_metric_values(EpochMetricRow, run_id, r, _EPOCH_FIELDS) for r in records]
    if rows:
        with db.session(write=True) as session:
            session.execute(sa.insert(EpochMetricRow), rows)
    return len(rows)


def add_sample(db: Database, run_id: int, *, epoch: int, step: int, array: Any,
               name: str = "vorticity") -> int:
    """Store a small array (anything with ``shape``, ``dtype`` and ``tobytes()``, e.g. a
    NumPy array; C order). Its id."""
    with db.session(write=True) as session:
        row = SampleRow(run_id=run_id, epoch=int(epoch), step=int(step), name=name,
                        shape=[int(n) for n in array.shape], dtype=array.dtype.str,
                        data=array.tobytes(order="C"))
        session.add(row)
        session.flush()
        return row.id


def truncate_metrics(db: Database, run_id: int, after_step: int) -> None:
    """Drop metrics past ``after_step``: what a killed run wrote after its last checkpoint,
    before the resumed run writes them again (a poller sees the step count go back)."""
    with db.session(write=True) as session:
        for table in (StepMetricRow, EpochMetricRow, SampleRow):
            session.execute(sa.delete(table).where(table.run_id == run_id,
                                                   table.step > after_step)
                            .execution_options(synchronize_session=False))
        session.execute(sa.update(RunRow).where(RunRow.id == run_id)
                        .values(steps_done=after_step)
                        .execution_options(synchronize_session=False))


def _step(row: StepMetricRow) -> StepMetric:
    return StepMetric(id=row.id, run_id=row.run_id, step=row.step, epoch=row.epoch,
                      loss=_float(join_float(row.loss, row.loss_kind)),
                      lr=_float(join_float(row.lr, row.lr_kind)),
                      grad_norm=_float(join_float(row.grad_norm, row.grad_norm_kind)),
                      data_ms=_float(row.data_ms), compute_ms=_float(row.compute_ms),
                      optimizer_ms=_float(row.optimizer_ms))


def _epoch(row: EpochMetricRow) -> EpochMetric:
    return EpochMetric(id=row.id, run_id=row.run_id, epoch=row.epoch, step=row.step,
                       train_loss=_float(join_float(row.train_loss, row.train_loss_kind)),
                       valid_loss=join_float(row.valid_loss, row.valid_loss_kind),
                       fixed_valid_loss=join_float(row.fixed_valid_loss,
                                                   row.fixed_valid_loss_kind),
                       epoch_s=_float(row.epoch_s), valid_s=_float(row.valid_s),
                       sample_s=_float(row.sample_s), train_s=_float(row.train_s),
                       fixed_valid_bins=None if row.fixed_valid_bins is None
                       else tuple(row.fixed_valid_bins))


def metrics_since(db: Database, run_id: int, cursor: MetricsCursor | None = None, *,
                  limit: int = 100_000) -> MetricsBatch:
    """The run's metric rows newer than ``cursor`` (all, without one), for incremental
    polling: pass the returned ``cursor`` next time."""
    cursor = cursor or MetricsCursor()
    with db.session() as session:
        steps = tuple(_step(r) for r in session.scalars(
            sa.select(StepMetricRow).where(StepMetricRow.run_id == run_id,
                                           StepMetricRow.id > cursor.step_id)
            .order_by(StepMetricRow.id).limit(limit)))
        epochs = tuple(_epoch(r) for r in session.scalars(
            sa.select(EpochMetricRow).where(EpochMetricRow.run_id == run_id,
                                            EpochMetricRow.id > cursor.epoch_id)
            .order_by(EpochMetricRow.id).limit(limit)))
        sample_ids = tuple(session.scalars(
            sa.select(SampleRow.id).where(SampleRow.run_id == run_id,
                                          SampleRow.name == "vorticity",
                                          SampleRow.id > cursor.sample_id)
            .order_by(SampleRow.id)))
    return MetricsBatch(steps, epochs, sample_ids, MetricsCursor(
        step_id=steps[-1].id if steps else cursor.step_id,
        epoch_id=epochs[-1].id if epochs else cursor.epoch_id,
        sample_id=sample_ids[-1] if sample_ids else cursor.sample_id))


def get_sample(db: Database, sample_id: int) -> Sample:
    with db.session() as session:
        row = session.get(SampleRow, sample_id)
        if row is None:
            raise NotFound(f"no sample with id {sample_id}")
        return Sample(id=row.id, run_id=row.run_id, epoch=row.epoch, step=row.step,
                      name=row.name, shape=tuple(row.shape), dtype=row.dtype, data=row.data)
