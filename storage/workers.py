"""The workers table: who is training, on which host and device (and in which Slurm job),
last heard from when.

One transaction per call, frozen `Worker` values out; times as in `storage.queue` (``now``
left out: the database clock). A worker registering with ``one_host=True`` on SQLite is
refused while a live worker of another host uses the database (`storage.hosts`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from diffbench.storage.db import Database
from diffbench.storage.hosts import LIVE_GRACE_S, SharedSQLite, refusal
from diffbench.storage.schema import WorkerRow, db_now, stamp


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
