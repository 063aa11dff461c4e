"""The workers table: who is training, on which host and device, last heard from when.

One transaction per call, frozen `Worker` values out; times as in `storage.queue` (``now``
left out: the database clock).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from diffbench.storage.db import Database
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

    @classmethod
    def from_row(cls, row: WorkerRow) -> Worker:
        return cls(**{f: getattr(row, f) for f in cls.__dataclass_fields__})

    def alive(self, now: dt.datetime, grace_s: float) -> bool:
        """Not stopped and heard from within ``grace_s`` of ``now`` (aware UTC)."""
        return self.stopped_at is None and (now - self.heartbeat_at).total_seconds() <= grace_s


def register_worker(db: Database, *, host: str, pid: int, device: str,
                    now: dt.datetime | None = None) -> Worker:
    with db.session(write=True) as session:
        row = WorkerRow(host=host, pid=int(pid), device=device, started_at=stamp(now),
                        heartbeat_at=stamp(now))
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
