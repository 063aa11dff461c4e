"""The job database's tables (SQLAlchemy 2.0 declarative). Alembic revisions in
``storage/migrations/versions`` create them; a change here needs a new revision.

ORM rows never leave `storage.queue`: it returns frozen value objects instead.

Conventions:

- Times are naive UTC in the database (`UTCDateTime` hands back aware UTC), stamped by the
  database's clock (`db_now`) unless a test passes an explicit time.
- A metric that may be non-finite is two columns: the value (NULL unless finite) and a
  `Kind` flag, because SQLite turns NaN into NULL and a diverged run's NaN is data.
- JSON columns (`JSONValue`) keep NaN and ±inf as the strings ``"NaN"``, ``"Infinity"``,
  ``"-Infinity"`` (strict JSON, as in the engine's JSON lines).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from enum import IntEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ForeignKey, Index, MetaData
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.expression import FunctionElement

from diffbench.engine import strict_json

# ----------------------------------------------------------------------------- types


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Naive UTC in the database, aware UTC in Python."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect
                           ) -> dt.datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect
                             ) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # a raw db_now() string read back through a text query
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


class JSONValue(sa.TypeDecorator[Any]):
    """Strict JSON text that keeps non-finite floats (`diffbench.engine.strict_json`)."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> str | None:
        if value is None:
            return None
        return json.dumps(strict_json.encode(value), allow_nan=False, sort_keys=True)

    def process_result_value(self, value: str | None, dialect: sa.Dialect) -> Any:
        return None if value is None else strict_json.decode(json.loads(value))


class Kind(IntEnum):
    """What a metric value is; the value column holds a number only for `FINITE`."""

    FINITE = 0
    NAN = 1
    POSINF = 2
    NEGINF = 3


def split_float(value: float | None) -> tuple[float | None, int | None]:
    """``value`` as (column value, kind): ``(x, 0)``, ``(None, 1|2|3)`` or ``(None, None)``."""
    if value is None:
        return None, None
    value = float(value)
    if math.isfinite(value):
        return value, Kind.FINITE
    if math.isnan(value):
        return None, Kind.NAN
    return None, Kind.POSINF if value > 0 else Kind.NEGINF


def join_float(value: float | None, kind: int | None) -> float | None:
    """The inverse of `split_float`."""
    if kind is None:
        return value
    return {Kind.FINITE: value, Kind.NAN: math.nan, Kind.POSINF: math.inf,
            Kind.NEGINF: -math.inf}[Kind(kind)]


# ----------------------------------------------------------------------------- clock


class db_now(FunctionElement[dt.datetime]):
    """The database's current UTC time, plus ``seconds`` (a float); microsecond text on
    SQLite in the same format SQLAlchemy writes, so stored times compare as strings."""

    type = UTCDateTime()
    inherit_cache = True
    name = "db_now"

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__(sa.literal(float(seconds), sa.Float()))


@compiles(db_now, "sqlite")
def _db_now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    offset = compiler.process(seconds, **kw)
    return (f"(strftime('%Y-%m-%d %H:%M:%f', 'now', ({offset}) || ' seconds') || '000')")


@compiles(db_now, "postgresql")
def _db_now_postgresql(element: db_now, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    offset = compiler.process(seconds, **kw)
    return (f"(timezone('utc', clock_timestamp()) "
            f"+ make_interval(secs => CAST({offset} AS double precision)))")


@compiles(db_now)
def _db_now_default(element: db_now, compiler: Any, **kw: Any) -> str:
    raise NotImplementedError(f"db_now() has no SQL for {compiler.dialect.name}; "
                              "supported: sqlite, postgresql")


# ----------------------------------------------------------------------------- tables


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    })


class WorkerRow(Base):
    """A worker process: where it runs and when it last said so."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    host: Mapped[str] = mapped_column(sa.String(255))
    pid: Mapped[int]
    device: Mapped[str] = mapped_column(sa.String(64))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    stopped_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # the Slurm job of a worker started by `diffbench slurm submit` ("<array job>_<task>"),
    # NULL outside Slurm (revision 0004)
    slurm_job: Mapped[str | None] = mapped_column(sa.String(64))


class RunRow(Base):
    """The job table: what to train, its status and lease, and what came of it."""

    __tablename__ = "runs"
    __table_args__ = (
        Index("ix_runs_claim", "status", "priority", "id"),
        Index("ix_runs_identity", "identity"),
        Index("ix_runs_lease", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    status: Mapped[str] = mapped_column(sa.String(16))
    priority: Mapped[int] = mapped_column(default=0)
    # what to train (the identity's fields)
    # a name or a preset file's path: TEXT (revision 0002); SQLite's column stays as 0001
    # made it, since SQLite keeps any length in a VARCHAR
    preset: Mapped[str] = mapped_column(sa.Text().with_variant(sa.String(64), "sqlite"))
    optimizer: Mapped[str] = mapped_column(sa.String(64))
    schedule: Mapped[str] = mapped_column(sa.String(64))
    lr: Mapped[float] = mapped_column(sa.Float(precision=53))
    weight_decay: Mapped[float] = mapped_column(sa.Float(precision=53))
    seed: Mapped[int]
    epochs: Mapped[int | None]
    overrides: Mapped[dict[str, Any]] = mapped_column(JSONValue())
    identity: Mapped[str] = mapped_column(sa.String(64))
    tags: Mapped[list[str]] = mapped_column(JSONValue())
    config: Mapped[dict[str, Any] | None] = mapped_column(JSONValue())  # RunConfig.to_dict()
    # the lease
    attempts: Mapped[int] = mapped_column(default=0)  # times claimed
    worker_id: Mapped[int | None] = mapped_column(
        ForeignKey("workers.id", ondelete="SET NULL"))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # progress and outcome
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())  # first claim
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    steps_done: Mapped[int] = mapped_column(default=0)
    checkpoint: Mapped[str | None] = mapped_column(sa.Text())
    provenance: Mapped[dict[str, Any] | None] = mapped_column(JSONValue())
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSONValue())
    error: Mapped[str | None] = mapped_column(sa.Text())
    traceback: Mapped[str | None] = mapped_column(sa.Text())


class StepMetricRow(Base):
    """One optimizer step (`engine.metrics.StepRecord`)."""

    __tablename__ = "step_metrics"
    __table_args__ = (Index("ix_step_metrics_run", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int]
    epoch: Mapped[int]
    loss: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    loss_kind: Mapped[int | None] = mapped_column(sa.SmallInteger())
    lr: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    lr_kind: Mapped[int | None] = mapped_column(sa.SmallInteger())
    grad_norm: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    grad_norm_kind: Mapped[int | None] = mapped_column(sa.SmallInteger())
    data_ms: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    compute_ms: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    optimizer_ms: Mapped[float | None] = mapped_column(sa.Float(precision=53))


class EpochMetricRow(Base):
    """The end of an epoch (`engine.metrics.EpochRecord`)."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (Index("ix_epoch_metrics_run", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    step: Mapped[int]
    train_loss: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    train_loss_kind: Mapped[int | None] = mapped_column(sa.SmallInteger())
    valid_loss: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    valid_loss_kind: Mapped[int | None] = mapped_column(sa.SmallInteger())
    fixed_valid_loss: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    fixed_valid_loss_kind: Mapped[int | None] = mapped_column(sa.SmallInteger())
    epoch_s: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    valid_s: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    sample_s: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    train_s: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    # one fixed-noise loss per t-bin of the run's provenance["loss_bins"] (revision 0003);
    # NULL on epochs without validation and on rows written before the engine measured it
    fixed_valid_bins: Mapped[list[float] | None] = mapped_column(JSONValue())


class SampleRow(Base):
    """A small array for previews (vorticity windows), as raw bytes with shape and dtype."""

    __tablename__ = "samples"
    __table_args__ = (Index("ix_samples_run", "run_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    epoch: Mapped[int]
    step: Mapped[int]
    name: Mapped[str] = mapped_column(sa.String(32), default="vorticity")
    shape: Mapped[list[int]] = mapped_column(JSONValue())
    dtype: Mapped[str] = mapped_column(sa.String(16))  # NumPy's dtype.str, e.g. "<f4"
    data: Mapped[bytes] = mapped_column(sa.LargeBinary())


class WorkerLoadRow(Base):
    """A worker's load when it heartbeat (revision 0005): GPU utilisation, memory and
    temperature (NVML), the host's CPU % and RAM (psutil). NULL where a sensor is absent (no
    GPU, no driver, a reading the GPU does not support); the last `workers.KEEP_LOAD` per
    worker are kept."""

    __tablename__ = "worker_load"
    __table_args__ = (Index("ix_worker_load_worker", "worker_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    gpu_util: Mapped[float | None] = mapped_column(sa.Float(precision=53))  # %
    gpu_memory_used: Mapped[int | None] = mapped_column(sa.BigInteger())  # bytes
    gpu_memory_total: Mapped[int | None] = mapped_column(sa.BigInteger())
    gpu_temp: Mapped[float | None] = mapped_column(sa.Float(precision=53))  # °C
    cpu_percent: Mapped[float | None] = mapped_column(sa.Float(precision=53))  # the host's
    ram_used: Mapped[int | None] = mapped_column(sa.BigInteger())  # bytes: total − available
    ram_total: Mapped[int | None] = mapped_column(sa.BigInteger())


class CalibrationRow(Base):
    """One `diffbench calibrate` (revision 0005): each optimizer's full training step timed
    side by side in interleaved rounds on one device and preset."""

    __tablename__ = "calibrations"
    __table_args__ = (Index("ix_calibrations_device_preset", "device", "preset", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    device: Mapped[str] = mapped_column(sa.String(255))  # kind · name, as `device_label`
    preset: Mapped[str] = mapped_column(sa.Text())  # as runs name it
    host: Mapped[str] = mapped_column(sa.String(255))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    rounds: Mapped[int]  # timed rounds (a warm-up round before them is not kept)
    steps: Mapped[int]  # steps per optimizer per round
    settings: Mapped[dict[str, Any]] = mapped_column(JSONValue())  # precision, versions, …


class CalibrationTimeRow(Base):
    """One optimizer's ms per step in a calibration: the mean over rounds, their sample std
    and each round's mean (paired with the other optimizers' rounds for ratios)."""

    __tablename__ = "calibration_times"
    __table_args__ = (Index("ix_calibration_times_calibration", "calibration_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    calibration_id: Mapped[int] = mapped_column(
        ForeignKey("calibrations.id", ondelete="CASCADE"))
    optimizer: Mapped[str] = mapped_column(sa.String(64))
    implementation: Mapped[str | None] = mapped_column(sa.String(255))
    ms_per_step: Mapped[float] = mapped_column(sa.Float(precision=53))
    ms_std: Mapped[float | None] = mapped_column(sa.Float(precision=53))
    rounds_ms: Mapped[list[float]] = mapped_column(JSONValue())


#: Float fields of each metric table that carry a `Kind` flag.
FLAGGED = {
    StepMetricRow: ("loss", "lr", "grad_norm"),
    EpochMetricRow: ("train_loss", "valid_loss", "fixed_valid_loss"),
}


# ----------------------------------------------------------------------------- identity


def identity(preset: str, optimizer: str, schedule: str, lr: float, weight_decay: float,
             seed: int, epochs: int | None, overrides: dict[str, Any]) -> str:
    """A hash of what makes two runs the same experiment (for duplicate detection).

    Floats are compared by value (``repr``), so ``1e-3`` and ``0.001`` are one run.
    """
    key = {"preset": preset, "optimizer": optimizer, "schedule": schedule,
           "lr": repr(float(lr)), "weight_decay": repr(float(weight_decay)),
           "seed": int(seed), "epochs": None if epochs is None else int(epochs),
           "overrides": strict_json.encode(dict(overrides))}
    text = json.dumps(key, sort_keys=True, allow_nan=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def stamp(now: dt.datetime | None, seconds: float = 0.0) -> Any:
    """``now + seconds`` as a value, or the database clock's expression if ``now`` is None."""
    if now is None:
        return db_now(seconds)
    if now.tzinfo is not None:
        now = now.astimezone(dt.UTC).replace(tzinfo=None)
    return now + dt.timedelta(seconds=seconds)
