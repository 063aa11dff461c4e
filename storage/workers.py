"""The workers table: who is training, on which host and device (and in which Slurm job),
last heard from when, and under what load.

One transaction per call, frozen `Worker` values out; times as in `storage.queue` (``now``
left out: the database clock). A worker registering with ``one_host=True`` on SQLite is
refused while a live worker of another host uses the database (`storage.hosts`).

Load: a heartbeat may carry a `LoadSample` (`queue.heartbeat(load=…)`, written by
`add_load` in the heartbeat's transaction); the last `KEEP_LOAD` per worker stay in the
``worker_load`` table, older ones are deleted as new ones come. A sensor that is absent
(no GPU, no NVML driver, a reading the GPU does not support) is None, never zero.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from diffbench.storage.db import Database
from diffbench.storage.hosts import LIVE_GRACE_S, SharedSQLite, refusal
from diffbench.storage.schema import WorkerLoadRow, WorkerRow, db_now, stamp

#: Load samples kept per worker: at a heartbeat every lease/3 (20 s by default), 10 minutes.
KEEP_LOAD = 30


@dataclass(frozen=True)
class Worker:
    id: int
    host: str
    pid: int
    device: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    stopped_at: dt.datetime | None
    slurm_job: str | None = None

    @classmethod
    def from_row(cls, row: WorkerRow) -> Worker:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def alive(self, now: dt.datetime, grace_s: float) -> bool:
        """Not stopped and heard from within ``grace_s`` of ``now`` (aware UTC)."""
        return self.stopped_at is None and (now - self.heartbeat_at).total_seconds() <= grace_s


@dataclass(frozen=True)
class LoadSample:
    """A worker's load at one heartbeat; None: the sensor is absent. GPU utilisation and CPU
    in %, memory in bytes (RAM used: total − available), temperature in °C; ``at`` is the
    database clock's (None before it is stored)."""

    gpu_util: float | None = None
    gpu_memory_used: int | None = None
    gpu_memory_total: int | None = None
    gpu_temp: float | None = None
    cpu_percent: float | None = None
    ram_used: int | None = None
    ram_total: int | None = None
    at: dt.datetime | None = None

    @property
    def has_gpu(self) -> bool:
        """Whether any GPU sensor answered."""
        return any(v is not None for v in (self.gpu_util, self.gpu_memory_used,
                                           self.gpu_temp))


LOAD_FIELDS = tuple(f for f in LoadSample.__dataclass_fields__ if f != "at")
LOAD_COLUMNS = (WorkerLoadRow.at, *(getattr(WorkerLoadRow, f) for f in LOAD_FIELDS))


def load_sample(row: sa.Row | tuple) -> LoadSample:
    """A `LoadSample` from the columns ``at, *LOAD_FIELDS`` (in that order)."""
    return LoadSample(*row[1:], at=row[0])


def add_load(session: Session, worker_id: int, sample: LoadSample | None, *,
             keep: int = KEEP_LOAD, now: dt.datetime | None = None) -> None:
    """Store ``sample`` (None: nothing) for the worker and delete its samples older than the
    last ``keep`` (in the caller's write transaction: `queue.heartbeat`'s)."""
    if sample is None:
        return
    session.execute(sa.insert(WorkerLoadRow).values(
        worker_id=worker_id, at=stamp(now), **{f: getattr(sample, f) for f in LOAD_FIELDS}))
    oldest_kept = (sa.select(WorkerLoadRow.id).where(WorkerLoadRow.worker_id == worker_id)
                   .order_by(WorkerLoadRow.id.desc()).offset(keep - 1).limit(1)
                   .scalar_subquery())
    session.execute(sa.delete(WorkerLoadRow).where(WorkerLoadRow.worker_id == worker_id,
                                                   WorkerLoadRow.id < oldest_kept))


def load_history(db: Database) -> dict[int, tuple[LoadSample, ...]]:
    """Every worker's kept samples, oldest first, by worker id (workers without: absent)."""
    out: dict[int, list[LoadSample]] = {}
    with db.session() as session:
        for row in session.execute(sa.select(WorkerLoadRow.worker_id, *LOAD_COLUMNS)
                                   .order_by(WorkerLoadRow.id)):
            out.setdefault(row[0], []).append(load_sample(row[1:]))
    return {worker_id: tuple(samples) for worker_id, samples in out.items()}


def register_worker(db: Database, *, host: str, pid: int, device: str,
                    slurm_job: str | None = None, one_host: bool = False,
                    grace_s: float = LIVE_GRACE_S, now: dt.datetime | None = None) -> Worker:
    """A new worker row. With ``one_host`` on SQLite, `SharedSQLite` instead while a worker
    of another host was heard from within ``grace_s`` (checked in the same transaction, which
    holds SQLite's write lock: two hosts starting at once cannot both pass)."""
    with db.session(write=True) as session:
        if one_host and db.dialect == "sqlite":
            other = session.execute(
                sa.select(WorkerRow.id, WorkerRow.host, WorkerRow.heartbeat_at, db_now())
                .where(WorkerRow.stopped_at.is_(None), WorkerRow.host != host,
                       WorkerRow.heartbeat_at >= stamp(now, -grace_s))
                .order_by(WorkerRow.heartbeat_at.desc()).limit(1)).first()
            if other is not None:
                clock = now or other[3]
                raise SharedSQLite(refusal(db.url, host, other[1], other[0],
                                           (clock - other[2]).total_seconds()))
        row = WorkerRow(host=host, pid=int(pid), device=device, slurm_job=slurm_job,
                        started_at=stamp(now), heartbeat_at=stamp(now))
        session.add(row)
        session.flush()
        session.refresh(row)
        return Worker.from_row(row)


def stop_worker(db: Database, worker_id: int, *, now: dt.datetime | None = None) -> None:
    with db.session(write=True) as session:
        session.execute(sa.update(WorkerRow).where(WorkerRow.id == worker_id)
                        .values(stopped_at=stamp(now), heartbeat_at=stamp(now))
                        .execution_options(synchronize_session=False))


def list_workers(db: Database) -> list[Worker]:
    with db.session() as session:
        return [Worker.from_row(r)
                for r in session.scalars(sa.select(WorkerRow).order_by(WorkerRow.id))]


def database_now(db: Database) -> dt.datetime:
    """The database clock (aware UTC): what heartbeats and leases are measured against."""
    with db.session() as session:
        return session.scalar(sa.select(db_now()))
