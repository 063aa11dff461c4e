"""The run records: step and epoch metrics, and small arrays (previews, the quality phase's
pictures), written as the trainer yields them and read back by cursor.

One transaction per call, frozen values out (`StepMetric`, `EpochMetric`, `Sample`,
`MetricsBatch`). Non-finite floats are kept as a flag beside the column (`schema.FLAGGED`).

The writes take ``worker_id``: a worker passes its own, and the write first checks that the
run is still running for it (`queue.hold_lease`, in the same transaction); if not it writes
nothing and raises `queue.LeaseLost`. ``worker_id=None`` writes unfenced: for code that is
no worker (tests, tools and benchmarks that fill a database).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from diffbench.engine.metrics import EpochRecord, StepRecord
from diffbench.storage.db import Database, NotFound
from diffbench.storage.queue import hold_lease
from diffbench.storage.schema import (
    FLAGGED,
    EpochMetricRow,
    RunRow,
    SampleRow,
    StepMetricRow,
    join_float,
    split_float,
)


@dataclass(frozen=True, kw_only=True)
class StepMetric(StepRecord):
    """A stored `engine.metrics.StepRecord`: its fields, its row id and run."""

    id: int
    run_id: int


@dataclass(frozen=True, kw_only=True)
class EpochMetric(EpochRecord):
    """A stored `engine.metrics.EpochRecord`: its fields, its row id and run."""

    id: int
    run_id: int


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


# The columns of each metric table are the fields of the engine's record: a new metric is a
# field there, a column in `schema` and a migration.
_STEP_FIELDS = tuple(f.name for f in dataclasses.fields(StepRecord))
_EPOCH_FIELDS = tuple(f.name for f in dataclasses.fields(EpochRecord))
#: Fields a mapping may leave out (None): those with a default, added after the rest.
_OPTIONAL_FIELDS = frozenset(f.name for record in (StepRecord, EpochRecord)
                             for f in dataclasses.fields(record)
                             if f.default is not dataclasses.MISSING)


def _fence(session: Session, run_id: int, worker_id: int | None) -> None:
    if worker_id is not None:
        hold_lease(session, run_id, worker_id)


def add_step_metrics(db: Database, run_id: int, records: Iterable[Any], *,
                     worker_id: int | None = None) -> int:
    """Insert a batch of step records (`engine.metrics.StepRecord`s or mappings with its
    fields) in one statement, and advance the run's ``steps_done``. The rows written.
    ``worker_id``: see the module's docstring."""
    rows = [_metric_values(StepMetricRow, run_id, r, _STEP_FIELDS) for r in records]
    if not rows:
        return 0
    with db.session(write=True) as session:
        _fence(session, run_id, worker_id)
        session.execute(sa.insert(StepMetricRow), rows)
        last = max(r["step"] for r in rows)
        session.execute(sa.update(RunRow).where(RunRow.id == run_id, RunRow.steps_done < last)
                        .values(steps_done=last).execution_options(synchronize_session=False))
    return len(rows)


def add_epoch_metrics(db: Database, run_id: int, records: Iterable[Any], *,
                      worker_id: int | None = None) -> int:
    """Insert epoch records (`engine.metrics.EpochRecord`s or mappings; a mapping may leave
    out ``fixed_valid_bins``) in one statement."""
    rows = [_metric_values(EpochMetricRow, run_id, r, _EPOCH_FIELDS) for r in records]
    if rows:
        with db.session(write=True) as session:
            _fence(session, run_id, worker_id)
            session.execute(sa.insert(EpochMetricRow), rows)
    return len(rows)


def add_sample(db: Database, run_id: int, *, epoch: int, step: int, array: Any,
               name: str = "vorticity", worker_id: int | None = None) -> int:
    """Store a small array (anything with ``shape``, ``dtype`` and ``tobytes()``, e.g. a
    NumPy array; C order). Its id."""
    with db.session(write=True) as session:
        _fence(session, run_id, worker_id)
        row = SampleRow(run_id=run_id, epoch=int(epoch), step=int(step), name=name,
                        shape=[int(n) for n in array.shape], dtype=array.dtype.str,
                        data=array.tobytes(order="C"))
        session.add(row)
        session.flush()
        return row.id


def truncate_metrics(db: Database, run_id: int, after_step: int, *,
                     worker_id: int | None = None) -> None:
    """Drop metrics past ``after_step``: what a killed run wrote after its last checkpoint,
    before the resumed run writes them again (a poller sees the step count go back)."""
    with db.session(write=True) as session:
        _fence(session, run_id, worker_id)
        for table in (StepMetricRow, EpochMetricRow, SampleRow):
            session.execute(sa.delete(table).where(table.run_id == run_id,
                                                   table.step > after_step)
                            .execution_options(synchronize_session=False))
        session.execute(sa.update(RunRow).where(RunRow.id == run_id)
                        .values(steps_done=after_step)
                        .execution_options(synchronize_session=False))


def stored_metric(metric: type[StepMetric] | type[EpochMetric], row: StepMetricRow | EpochMetricRow
            ) -> Any:
    """The metric of a row: flagged floats joined with their kind (`schema.FLAGGED`), a
    missing float NaN unless the field may be None, JSON lists as tuples."""
    flagged = FLAGGED[type(row)]
    values = {}
    for name, optional in _fields(metric):
        value = getattr(row, name)
        if name in flagged:
            value = join_float(value, getattr(row, f"{name}_kind"))
        if value is None and not optional:
            value = math.nan
        values[name] = tuple(value) if isinstance(value, list) else value
    return metric(**values)


@functools.cache
def _fields(metric: type) -> tuple[tuple[str, bool], ...]:
    """Each field of a metric dataclass and whether it may be None (read once per class:
    resolving type hints costs more than reading a row)."""
    hints = typing.get_type_hints(metric)
    return tuple((f.name, type(None) in typing.get_args(hints[f.name]))
                 for f in dataclasses.fields(metric))


def metrics_since(db: Database, run_id: int, cursor: MetricsCursor | None = None, *,
                  limit: int = 100_000) -> MetricsBatch:
    """The run's metric rows newer than ``cursor`` (all, without one), for incremental
    polling: pass the returned ``cursor`` next time."""
    cursor = cursor or MetricsCursor()
    with db.session() as session:
        steps = tuple(stored_metric(StepMetric, r) for r in session.scalars(
            sa.select(StepMetricRow).where(StepMetricRow.run_id == run_id,
                                           StepMetricRow.id > cursor.step_id)
            .order_by(StepMetricRow.id).limit(limit)))
        epochs = tuple(stored_metric(EpochMetric, r) for r in session.scalars(
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
