"""Read-only queries for pollers (the dashboard): narrow projections and incremental reads.

`storage.queue` returns whole runs and one run's metrics; a dashboard that refreshes every
second over 1,000 runs and 1,000,000 step rows needs less per read: the runs' columns a
table shows (no config, provenance or traceback JSON), read in full only for runs it has not
seen, and every tick just the columns that change (`run_marks`); the steps of *every* run
newer than one global row id (primary-key range scans), and one aggregate over the step
table when it starts. Each function takes the caller's session, so one tick's reads are one
short read transaction (a consistent view; on SQLite in WAL mode workers never wait on it).
Query plans (SQLite): the mark and worker reads scan small tables, everything else searches
the primary key or the ``(run_id, id)`` indexes (workers' load samples: a primary-key range
past a cursor). The run screen's reads (``run`` onwards)
take one run, past per-run cursors.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from diffbench.storage.records import EpochMetric, stored_metric
from diffbench.storage.runs import Run, device_of
from diffbench.storage.schema import (
    EpochMetricRow,
    RunRow,
    SampleRow,
    StepMetricRow,
    WorkerLoadRow,
    WorkerRow,
    db_now,
    join_float,
)
from diffbench.storage.states import Status
from diffbench.storage.step_ratios import Placement, device_label
from diffbench.storage.workers import LOAD_COLUMNS, LoadSample, Worker, load_sample


@dataclass(frozen=True)
class RunMark:
    """The columns of a run that change after it is queued (a claim, a step, a finish, a
    retry); the rest of its `RunLine` is read once."""

    status: Status
    steps_done: int
    worker_id: int | None


@dataclass(frozen=True)
class RunLine:
    """The columns of a run a table row shows."""

    id: int
    preset: str
    optimizer: str
    schedule: str
    lr: float
    weight_decay: float
    seed: int
    epochs: int | None
    tags: tuple[str, ...]
    mark: RunMark


@dataclass(frozen=True)
class StepTail:
    """A step row, reduced to what live aggregates need."""

    id: int
    run_id: int
    step: int
    epoch: int
    loss: float
    ms: float  # data + compute + optimizer


@dataclass(frozen=True)
class StepTotals:
    """A run's steps (since a cursor): how many, their summed ms, the first step number and
    the last row."""

    count: int
    ms_sum: float
    first_step: int
    last: StepTail


_MARK = (RunRow.status, RunRow.steps_done, RunRow.worker_id)
_LINE = (RunRow.id, RunRow.preset, RunRow.optimizer, RunRow.schedule, RunRow.lr,
         RunRow.weight_decay, RunRow.seed, RunRow.epochs, RunRow.tags, *_MARK)
_MS = (sa.func.coalesce(StepMetricRow.data_ms, 0.0)
       + sa.func.coalesce(StepMetricRow.compute_ms, 0.0)
       + sa.func.coalesce(StepMetricRow.optimizer_ms, 0.0))
_TAIL = (StepMetricRow.id, StepMetricRow.run_id, StepMetricRow.step, StepMetricRow.epoch,
         StepMetricRow.loss, StepMetricRow.loss_kind, _MS)


def _tail(row: sa.Row) -> StepTail:
    loss = join_float(row[4], row[5])
    return StepTail(id=row[0], run_id=row[1], step=row[2], epoch=row[3],
                    loss=math.nan if loss is None else loss, ms=float(row[6]))


def run_marks(session: Session) -> dict[int, tuple[str, int, int | None]]:
    """Every run's changing columns as plain tuples (status, steps done, worker), by id:
    cheap enough to read every tick, and compared to the last ones to find changed runs."""
    rows = session.execute(sa.select(RunRow.id, *_MARK)).all()
    return {row[0]: tuple(row[1:]) for row in rows}


def mark(values: tuple[str, int, int | None]) -> RunMark:
    return RunMark(Status(values[0]), values[1], values[2])


def database_now(session: Session) -> dt.datetime:
    """The database clock (aware UTC), what heartbeat ages are measured against."""
    return session.scalar(sa.select(db_now()))


def run_lines(session: Session, run_ids: Iterable[int] | None = None) -> list[RunLine]:
    """The table columns of every run (or of ``run_ids``), by id."""
    ids = None if run_ids is None else list(run_ids)
    query = sa.select(*_LINE).order_by(RunRow.id)
    rows = list(session.execute(query)) if ids is None else []
    for chunk in range(0, len(ids or ()), 500):
        rows += session.execute(query.where(RunRow.id.in_(ids[chunk:chunk + 500]))).all()
    return [RunLine(*row[:8], tuple(row[8] or ()), mark(row[9:])) for row in rows]


def workers(session: Session) -> list[Worker]:
    """Every worker, by id (a Core query: no ORM objects to build every tick)."""
    fields = [getattr(WorkerRow, name) for name in Worker.__dataclass_fields__]
    return [Worker(*row) for row in session.execute(sa.select(*fields).order_by(WorkerRow.id))]


def load_after(session: Session, after_id: int) -> list[tuple[int, int, LoadSample]]:
    """Workers' load samples with an id above ``after_id`` (a primary-key range), oldest
    first, as (row id, worker id, sample): the first call reads the few kept per worker."""
    return [(row[0], row[1], load_sample(row[2:])) for row in session.execute(
        sa.select(WorkerLoadRow.id, WorkerLoadRow.worker_id, *LOAD_COLUMNS)
        .where(WorkerLoadRow.id > after_id).order_by(WorkerLoadRow.id))]


def step_totals(session: Session, run_ids: Iterable[int] | None = None, *, after_id: int = 0
                ) -> tuple[dict[int, StepTotals], int]:
    """Per run (all, or ``run_ids``), over its step rows with an id above ``after_id``:
    their count, summed ms, first step and last row; and the largest step row id, the
    cursor for the next call. One aggregate (a primary-key range scan when ``after_id`` is
    recent) plus one lookup of the last rows by primary key."""
    # Grouped by ``run_id + 0`` past a cursor: SQLite would otherwise walk the whole
    # (run_id, id) index to group, instead of the few new rows of the primary-key range.
    run = (StepMetricRow.run_id + 0 if after_id else StepMetricRow.run_id).label("run")
    query = (sa.select(run, sa.func.count(), sa.func.sum(_MS),
                       sa.func.max(StepMetricRow.id), sa.func.min(StepMetricRow.step))
             .where(StepMetricRow.id > after_id).group_by(run))
    if run_ids is not None:
        query = query.where(StepMetricRow.run_id.in_(list(run_ids)))
    groups = session.execute(query).all()
    last_ids = [g[3] for g in groups]
    tails = {}
    for chunk in range(0, len(last_ids), 500):
        for row in session.execute(sa.select(*_TAIL).where(
                StepMetricRow.id.in_(last_ids[chunk:chunk + 500]))):
            tails[row[0]] = _tail(row)
    top = max(last_ids, default=after_id)
    totals = {run_id: StepTotals(count=n, ms_sum=float(ms or 0.0), first_step=first,
                                 last=tails[last])
              for run_id, n, ms, last, first in groups}
    return totals, top


def epochs_after(session: Session, after_id: int) -> list[EpochMetric]:
    """Epoch rows of every run with an id above ``after_id``, oldest first."""
    return [stored_metric(EpochMetric, r) for r in session.scalars(
        sa.select(EpochMetricRow).where(EpochMetricRow.id > after_id)
        .order_by(EpochMetricRow.id))]


def run_devices(session: Session, run_ids: Iterable[int]) -> dict[int, str]:
    """The device each run trained on (GPU name, else the torch device), for runs whose
    worker recorded provenance; for comparing step times on the same hardware only."""
    ids = list(run_ids)
    out: dict[int, str] = {}
    for chunk in range(0, len(ids), 500):
        for run_id, provenance in session.execute(
                sa.select(RunRow.id, RunRow.provenance)
                .where(RunRow.id.in_(ids[chunk:chunk + 500]), RunRow.provenance.is_not(None))):
            device = device_of(provenance)
            if device:
                out[run_id] = device
    return out


def run_placements(session: Session, run_ids: Iterable[int] | None = None
                   ) -> dict[int, Placement]:
    """Where and when each run (all, or ``run_ids``) that was ever claimed trained: device
    label and host from its provenance, first claim and finish; for `step_ratios`."""
    query = (sa.select(RunRow.id, RunRow.provenance, RunRow.started_at, RunRow.finished_at)
             .where(RunRow.started_at.is_not(None)))
    ids = None if run_ids is None else list(run_ids)
    rows = list(session.execute(query)) if ids is None else []
    for chunk in range(0, len(ids or ()), 500):
        rows += session.execute(query.where(RunRow.id.in_(ids[chunk:chunk + 500]))).all()
    return {run_id: Placement(device_label(provenance), (provenance or {}).get("host"),
                              started, finished, device_of(provenance))
            for run_id, provenance, started, finished in rows}


# ----------------------------------------------------------------------------- one run
# The run screen's reads: one run, through its primary key and the ``(run_id, id)`` indexes
# (no table scan), incrementally past per-run cursors while it trains.


@dataclass(frozen=True)
class RunCursors:
    """The newest step, epoch and sample row ids of one run (0: none): a poller compares
    them with the last ones to know whether anything was written."""

    step_id: int
    epoch_id: int
    sample_id: int


@dataclass(frozen=True)
class StepSums:
    """A run's step rows past a cursor: how many, their summed data / compute / optimizer
    ms, the first and last step numbers and the largest row id."""

    count: int
    data_ms: float
    compute_ms: float
    optimizer_ms: float
    first_step: int | None
    last_step: int | None
    last_id: int


@dataclass(frozen=True)
class StepTimes:
    """A step's loss and its data / compute / optimizer milliseconds."""

    step: int
    loss: float
    data_ms: float
    compute_ms: float
    optimizer_ms: float


@dataclass(frozen=True)
class SampleEntry:
    """A stored array of a run without its bytes (`records.get_sample` fetches them)."""

    id: int
    name: str
    epoch: int
    step: int


def run(session: Session, run_id: int) -> Run | None:
    """The whole run (config, provenance, summary, traceback), None if there is none."""
    row = session.get(RunRow, run_id)
    return None if row is None else Run.from_row(row)


def run_cursors(session: Session, run_id: int) -> RunCursors:
    """Three index lookups: the largest row id of the run in each metric table."""
    def top(table: type) -> int:
        return session.scalar(sa.select(sa.func.max(table.id))
                              .where(table.run_id == run_id)) or 0

    return RunCursors(top(StepMetricRow), top(EpochMetricRow), top(SampleRow))


def step_sums(session: Session, run_id: int, *, after_id: int = 0) -> StepSums:
    """One aggregate over the run's step rows with an id above ``after_id``."""
    row = session.execute(
        sa.select(sa.func.count(), sa.func.sum(StepMetricRow.data_ms),
                  sa.func.sum(StepMetricRow.compute_ms), sa.func.sum(StepMetricRow.optimizer_ms),
                  sa.func.min(StepMetricRow.step), sa.func.max(StepMetricRow.step),
                  sa.func.max(StepMetricRow.id))
        .where(StepMetricRow.run_id == run_id, StepMetricRow.id > after_id)).one()
    return StepSums(count=row[0], data_ms=float(row[1] or 0.0), compute_ms=float(row[2] or 0.0),
                    optimizer_ms=float(row[3] or 0.0), first_step=row[4], last_step=row[5],
                    last_id=row[6] or after_id)


def recent_steps(session: Session, run_id: int, count: int) -> list[StepTimes]:
    """The run's last ``count`` steps' loss and times, oldest first (a Core query: no ORM
    rows or metric objects to build every tick)."""
    rows = session.execute(
        sa.select(StepMetricRow.step, StepMetricRow.loss, StepMetricRow.loss_kind,
                  StepMetricRow.data_ms, StepMetricRow.compute_ms, StepMetricRow.optimizer_ms)
        .where(StepMetricRow.run_id == run_id)
        .order_by(StepMetricRow.id.desc()).limit(count)).all()
    out = []
    for step, loss, kind, *ms in reversed(rows):
        value = join_float(loss, kind)
        out.append(StepTimes(step, math.nan if value is None else value,
                             *(float(m or 0.0) for m in ms)))
    return out


def run_epochs(session: Session, run_id: int, *, after_id: int = 0) -> list[EpochMetric]:
    """The run's epoch rows with an id above ``after_id``, oldest first."""
    return [stored_metric(EpochMetric, r) for r in session.scalars(
        sa.select(EpochMetricRow).where(EpochMetricRow.run_id == run_id,
                                        EpochMetricRow.id > after_id)
        .order_by(EpochMetricRow.id))]


def run_samples(session: Session, run_id: int, *, after_id: int = 0) -> list[SampleEntry]:
    """The run's stored arrays past ``after_id`` (names, epochs, steps; not their bytes)."""
    return [SampleEntry(*row) for row in session.execute(
        sa.select(SampleRow.id, SampleRow.name, SampleRow.epoch, SampleRow.step)
        .where(SampleRow.run_id == run_id, SampleRow.id > after_id).order_by(SampleRow.id))]


def workers_by_id(session: Session, worker_ids: Iterable[int]) -> dict[int, Worker]:
    """The workers of ``worker_ids`` that still exist, by id."""
    ids = sorted(set(worker_ids))
    if not ids:
        return {}
    fields = [getattr(WorkerRow, name) for name in Worker.__dataclass_fields__]
    return {w.id: w for w in (Worker(*row) for row in session.execute(
        sa.select(*fields).where(WorkerRow.id.in_(ids))))}
