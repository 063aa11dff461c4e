"""The queue: runs and their state machine, plain functions over a `Database`, shared by the
CLI, the worker and the TUI (the workers table is `storage.workers`, the metrics a run
writes `storage.records`).

Every function is one transaction (`Database.session`) and returns frozen value objects
(`storage.runs`: `Run`, `Lease`, …), never ORM rows. Status changes follow
`storage.states`; claims and lease updates are conditional ``UPDATE``s whose row count
says whether this caller won, so any number of workers (processes or machines) can share
one database.

Times: each function that stamps a time takes ``now`` (an aware or naive-UTC datetime).
Left out, the database's clock stamps it (`schema.db_now`), so workers on machines with
skewed clocks still agree on leases; tests pass explicit times instead of sleeping.

A worker's life, in calls::

    worker = workers.register_worker(db, host=…, pid=…, device=…)
    run = claim_next(db, worker.id, lease_s=60)          # None: the queue is empty
    record_start(db, run.id, worker.id, provenance=…)
    records.add_step_metrics(db, run.id, steps, worker_id=worker.id)  # as the trainer flushes
    lease = heartbeat(db, worker.id, run.id, lease_s=60) # lease.lost: stop; .cancel_requested
    finish(db, run.id, worker.id, "done", summary=…)     # or release() on SIGTERM
    workers.stop_worker(db, worker.id)

Fencing: each write a worker makes for a run (`record_start`, `finish`, `release`, the
writes of `storage.records`) first checks in its transaction that the run is still its
(`hold_lease`, one locking read); a worker that lost the run (its lease expired, say while
paused, and the run was requeued or taken: a "zombie") writes nothing: `LeaseLost`.
``worker_id=None`` is no fence, for code that is no worker (tests, tools).

Lost workers: before each claim a worker calls `requeue_stale`, which requeues the runs
whose lease expired and counts each loss in ``provenance["workers_lost"]`` (``attempts``
counts claims); a clean `release` (SIGTERM, SIGINT, preemption: checkpointed, handed back)
counts none, `retry` starts again. With ``max_attempts`` (``worker --max-attempts``,
default 3) a run that lost its worker that often fails instead.

Locks: on SQLite a writing session holds the whole database (``BEGIN IMMEDIATE``). On
PostgreSQL a function that reads rows and then changes them locks them first
(``FOR NO KEY UPDATE``, which metric inserts' foreign-key checks do not wait for; a
fenced write so locks the run before its metric rows); claims and `requeue_stale` skip
rows another transaction holds (``SKIP LOCKED``), and `enqueue` takes an advisory lock so
two callers cannot both queue the same run. SQLite ignores ``FOR UPDATE``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from diffbench.engine.vocabulary import lr_problem, weight_decay_problem
from diffbench.storage import states
from diffbench.storage.db import Database, NotFound, StorageError
from diffbench.storage.runs import EnqueueResult, Lease, Run, RunSpec
from diffbench.storage.schema import RunRow, WorkerRow, stamp
from diffbench.storage.states import IllegalTransition, Status
from diffbench.storage.workers import LoadSample, add_load

#: PostgreSQL advisory lock held by `enqueue` (duplicate check then insert).
ENQUEUE_LOCK = 0x6469666671  # "diffq"
#: The provenance key counting a run's lost workers (see "Lost workers" above).
LOST_KEY = "workers_lost"


class LeaseLost(IllegalTransition):
    """A worker wrote for a run it no longer holds (its lease expired and the run was
    requeued, claimed by another worker, finished or removed); nothing was written."""

    def __init__(self, run_id: int, worker_id: int, state: str) -> None:
        super().__init__(f"run {run_id} is not leased to worker {worker_id} any more "
                         f"({state}): its lease was lost, nothing was written")
        self.run_id, self.worker_id = run_id, worker_id


# ----------------------------------------------------------------------------- helpers


def _row(session: Session, run_id: int, *, lock: bool = False) -> RunRow:
    """The run; with ``lock``, row-locked until the transaction ends (PostgreSQL)."""
    query = sa.select(RunRow).where(RunRow.id == run_id)
    if lock:
        query = query.with_for_update(key_share=True)
    row = session.scalars(query).one_or_none()
    if row is None:
        raise NotFound(f"no run with id {run_id}")
    return row


def _rows(session: Session, run_ids: Iterable[int], *, key_share: bool = True
          ) -> list[RunRow]:
    """The runs, row-locked (in id order: no deadlock between two callers), in the order
    given; `NotFound` naming every missing id (nothing changed). ``key_share=False`` locks
    them for a delete."""
    ids = list(dict.fromkeys(int(i) for i in run_ids))
    found = {r.id: r for r in session.scalars(
        sa.select(RunRow).where(RunRow.id.in_(ids)).order_by(RunRow.id)
        .with_for_update(key_share=key_share))}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(f"no run with id {', '.join(map(str, missing))}")
    return [found[i] for i in ids]


# ----------------------------------------------------------------------------- queue


def enqueue(db: Database, specs: Iterable[RunSpec], *, allow_duplicates: bool = False,
            now: dt.datetime | None = None) -> EnqueueResult:
    """Queue ``specs`` in one transaction; skip any identical to a queued, running or done
    run (or to an earlier spec here) unless ``allow_duplicates``."""
    specs = list(specs)
    for spec in specs:
        for problem in (lr_problem(spec.lr), weight_decay_problem(spec.weight_decay)):
            if problem is not None:
                raise StorageError(problem)
        if spec.epochs is not None and spec.epochs < 1:
            raise StorageError(f"epochs must be ≥ 1, not {spec.epochs!r}")
        if db.dialect != "sqlite":  # SQLite keeps any length; PostgreSQL refuses, unnamed
            for name in ("optimizer", "schedule"):
                limit = RunRow.__table__.c[name].type.length
                if len(getattr(spec, name)) > limit:
                    raise StorageError(f"{name} {getattr(spec, name)!r} is longer than the "
                                       f"{limit} characters the job database holds")
    ids: list[int] = []
    skipped: list[tuple[RunSpec, int]] = []
    with db.session(write=True) as session:
        if db.dialect == "postgresql":
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(ENQUEUE_LOCK)))
        seen: dict[str, int] = {}
        if not allow_duplicates:
            keys = list({s.identity for s in specs})
            for chunk in range(0, len(keys), 500):
                rows = session.execute(
                    sa.select(RunRow.identity, sa.func.min(RunRow.id))
                    .where(RunRow.identity.in_(keys[chunk:chunk + 500]),
                           RunRow.status.in_([s.value for s in states.BLOCKS_DUPLICATES]))
                    .group_by(RunRow.identity))
                seen.update({key: run_id for key, run_id in rows})
        created = stamp(now)
        for spec in specs:
            key = spec.identity
            if key in seen and not allow_duplicates:
                skipped.append((spec, seen[key]))
                continue
            row = RunRow(status=Status.QUEUED.value, priority=int(spec.priority),
                         preset=spec.preset, optimizer=spec.optimizer,
                         schedule=spec.schedule, lr=float(spec.lr),
                         weight_decay=float(spec.weight_decay), seed=int(spec.seed),
                         epochs=spec.epochs, overrides=dict(spec.overrides), identity=key,
                         tags=list(spec.tags),
                         config=None if spec.config is None else dict(spec.config),
                         attempts=0, cancel_requested=False, steps_done=0,
                         created_at=created)
            session.add(row)
            session.flush()
            ids.append(row.id)
            seen[key] = row.id
    return EnqueueResult(tuple(ids), tuple(skipped))


def claim_next(db: Database, worker_id: int, *, lease_s: float = 60.0,
               now: dt.datetime | None = None, tries: int = 8,
               ids: Iterable[int] | None = None) -> Run | None:
    """Move the next queued run (highest priority, then oldest; only among ``ids`` if
    given) to running for ``worker_id``, atomically; None if the queue is empty.

    The move is ``UPDATE runs … WHERE id = :id AND status = 'queued'``: if another worker
    won the race the row count is 0 and the next candidate is tried. On PostgreSQL the
    candidate is selected ``FOR NO KEY UPDATE SKIP LOCKED``, so concurrent workers pick
    different rows without waiting for each other; on SQLite the write transaction
    (``BEGIN IMMEDIATE``) already serializes them.
    """
    states.check_transition(Status.QUEUED, Status.RUNNING)
    candidates = sa.select(RunRow.id).where(RunRow.status == Status.QUEUED.value)
    if ids is not None:
        candidates = candidates.where(RunRow.id.in_(list(ids)))
    for _ in range(tries):
        with db.session(write=True) as session:
            run_id = session.scalar(
                candidates
                .order_by(RunRow.priority.desc(), RunRow.id).limit(1)
                .with_for_update(skip_locked=True, key_share=True))
            if run_id is None:
                return None
            claimed_at = stamp(now)
            result = session.execute(
                sa.update(RunRow)
                .where(RunRow.id == run_id, RunRow.status == Status.QUEUED.value)
                .values(status=Status.RUNNING.value, worker_id=worker_id,
                        attempts=RunRow.attempts + 1, heartbeat_at=claimed_at,
                        lease_expires_at=stamp(now, lease_s), cancel_requested=False,
                        started_at=sa.func.coalesce(RunRow.started_at, claimed_at),
                        error=None, traceback=None)
                .execution_options(synchronize_session=False))
            if result.rowcount == 1:
                return Run.from_row(_row(session, run_id))
    return None


def heartbeat(db: Database, worker_id: int, run_id: int | None = None, *, lease_s: float = 60.0,
              now: dt.datetime | None = None, load: LoadSample | None = None) -> Lease:
    """Stamp the worker alive (storing its ``load``, if any) and, with ``run_id``, extend that
    run's lease, if it is still running for this worker. The answer says whether the lease was
    lost (the run was requeued, cancelled or removed meanwhile) and whether a cancel was asked."""
    with db.session(write=True) as session:
        session.execute(sa.update(WorkerRow).where(WorkerRow.id == worker_id)
                        .values(heartbeat_at=stamp(now))
                        .execution_options(synchronize_session=False))
        add_load(session, worker_id, load, now=now)
        if run_id is None:
            return Lease(lost=False, cancel_requested=False, expires_at=None)
        result = session.execute(
            sa.update(RunRow)
            .where(RunRow.id == run_id, RunRow.worker_id == worker_id,
                   RunRow.status == Status.RUNNING.value)
            .values(heartbeat_at=stamp(now), lease_expires_at=stamp(now, lease_s))
            .execution_options(synchronize_session=False))
        if result.rowcount != 1:
            return Lease(lost=True, cancel_requested=False, expires_at=None)
        row = session.execute(sa.select(RunRow.cancel_requested, RunRow.lease_expires_at)
                              .where(RunRow.id == run_id)).one()
        return Lease(lost=False, cancel_requested=bool(row[0]), expires_at=row[1])


def hold_lease(session: Session, run_id: int, worker_id: int) -> None:
    """A worker's fence, first in its write transaction: `LeaseLost` unless the run is
    running for ``worker_id``. The read locks the row (PostgreSQL; SQLite's transaction
    holds the database), so the run cannot be requeued or taken before the write commits."""
    held = session.scalar(
        sa.select(RunRow.id).where(RunRow.id == run_id, RunRow.worker_id == worker_id,
                                   RunRow.status == Status.RUNNING.value)
        .with_for_update(key_share=True))
    if held is None:
        row = session.execute(sa.select(RunRow.status, RunRow.worker_id)
                              .where(RunRow.id == run_id)).one_or_none()
        raise LeaseLost(run_id, worker_id, "it was removed" if row is None
                        else f"worker {row.worker_id} holds it"
                        if row.status == Status.RUNNING.value
                        else f"it is {row.status}")


def _owned_running(session: Session, run_id: int, worker_id: int | None) -> RunRow:
    if worker_id is not None:
        hold_lease(session, run_id, worker_id)
    row = _row(session, run_id, lock=True)
    if row.status != Status.RUNNING.value:
        raise IllegalTransition(f"run {run_id} is {row.status}, not running")
    return row


def finish(db: Database, run_id: int, worker_id: int | None, status: str | Status, *,
           summary: Mapping[str, Any] | None = None, error: str | None = None,
           traceback: str | None = None, steps_done: int | None = None,
           now: dt.datetime | None = None) -> Run:
    """End a running run as done, failed, diverged or cancelled. ``worker_id`` must hold
    the lease, else `LeaseLost` and nothing changes (None: unfenced, any running run)."""
    target = states.status(status)
    if target not in states.FINAL:
        raise IllegalTransition(f"finish takes a final status "
                                f"({', '.join(sorted(states.FINAL))}), not {target.value}")
    with db.session(write=True) as session:
        row = _owned_running(session, run_id, worker_id)
        states.check_transition(row.status, target, run_id=run_id)
        row.status = target.value
        row.finished_at = stamp(now)
        row.lease_expires_at = None
        row.summary = None if summary is None else dict(summary)
        row.error = error
        row.traceback = traceback
        if steps_done is not None:
            row.steps_done = int(steps_done)
        session.flush()
        session.refresh(row)
        return Run.from_row(row)


def release(db: Database, run_id: int, worker_id: int | None, *, reason: str | None = None,
            now: dt.datetime | None = None) -> Run:
    """Put a running run back in the queue (the worker was interrupted; it resumes from
    its checkpoint): not a lost worker. Attempts stay; the next claim adds one."""
    with db.session(write=True) as session:
        row = _owned_running(session, run_id, worker_id)
        states.check_transition(row.status, Status.QUEUED, run_id=run_id)
        _requeue(row, reason)
        session.flush()
        return Run.from_row(row)


def _requeue(row: RunRow, reason: str | None) -> None:
    row.status = Status.QUEUED.value
    row.worker_id = None
    row.lease_expires_at = None
    row.heartbeat_at = None
    row.error = reason


def requeue_stale(db: Database, *, now: dt.datetime | None = None,
                  max_attempts: int | None = None) -> tuple[int, ...]:
    """Runs whose lease expired (their worker was lost: killed, out of memory, paused, its
    machine gone) go back to the queue, the loss counted (`LOST_KEY`); with ``max_attempts``
    a run that has now lost its worker that often fails instead, saying why. The ids moved."""
    if max_attempts is not None and max_attempts < 1:
        raise StorageError(f"max_attempts must be ≥ 1, not {max_attempts!r}")
    moved: list[int] = []
    with db.session(write=True) as session:
        stale = session.scalars(  # rows another caller is moving are its business
            sa.select(RunRow).where(RunRow.status == Status.RUNNING.value,
                                    RunRow.lease_expires_at < stamp(now))
            .order_by(RunRow.id).with_for_update(skip_locked=True, key_share=True)).all()
        hosts = dict(session.execute(sa.select(WorkerRow.id, WorkerRow.host).where(
            WorkerRow.id.in_({r.worker_id for r in stale}))).all()) if stale else {}
        for row in stale:
            lost = int((row.provenance or {}).get(LOST_KEY, 0)) + 1
            row.provenance = {**(row.provenance or {}), LOST_KEY: lost}
            last = (f"worker {row.worker_id} on host {hosts.get(row.worker_id, '?')}, lease "
                    f"expired at {row.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC")
            if max_attempts is not None and lost >= max_attempts:
                states.check_transition(row.status, Status.FAILED, run_id=row.id)
                row.status = Status.FAILED.value
                row.finished_at = stamp(now)
                row.lease_expires_at = None
                row.error = (f"lost its worker {lost} time{'s' if lost > 1 else ''} "
                             f"(last: {last}); raise --max-attempts or check its memory use")
            else:
                states.check_transition(row.status, Status.QUEUED, run_id=row.id)
                _requeue(row, f"lost its worker ({last}); lost {lost} of "
                              f"{max_attempts or 'unlimited'} allowed")
            moved.append(row.id)
    return tuple(moved)


def cancel(db: Database, run_ids: Iterable[int]) -> dict[int, str]:
    """Queued runs become cancelled; running ones get a cancel request their worker acts
    on. Per id: ``"cancelled"``, ``"requested"`` or ``"unchanged"`` (already final)."""
    outcome: dict[int, str] = {}
    with db.session(write=True) as session:
        for row in _rows(session, run_ids):
            if row.status == Status.QUEUED.value:
                states.check_transition(row.status, Status.CANCELLED, run_id=row.id)
                row.status = Status.CANCELLED.value
                outcome[row.id] = "cancelled"
            elif row.status == Status.RUNNING.value:
                row.cancel_requested = True
                outcome[row.id] = "requested"
            else:
                outcome[row.id] = "unchanged"
    return outcome


def retry(db: Database, run_ids: Iterable[int]) -> tuple[int, ...]:
    """Failed, cancelled or diverged runs go back to the queue (all or none)."""
    with db.session(write=True) as session:
        rows = _rows(session, run_ids)
        for row in rows:
            states.check_transition(row.status, Status.QUEUED, run_id=row.id)
            if row.status == Status.RUNNING.value:  # the table allows it for leases only
                raise IllegalTransition(f"run {row.id} is running; cancel it first")
        for row in rows:
            _requeue(row, None)
            if LOST_KEY in (row.provenance or {}):  # a retried run may lose N workers again
                row.provenance = {k: v for k, v in row.provenance.items() if k != LOST_KEY}
            row.traceback = None
            row.finished_at = None
            row.cancel_requested = False
        return tuple(r.id for r in rows)


def remove(db: Database, run_ids: Iterable[int]) -> tuple[int, ...]:
    """Delete runs and their metrics (all or none); a running run is refused."""
    with db.session(write=True) as session:
        rows = _rows(session, run_ids, key_share=False)
        for row in rows:
            if row.status == Status.RUNNING.value:
                raise IllegalTransition(f"run {row.id} is running; cancel it first")
        ids = tuple(r.id for r in rows)
        session.execute(sa.delete(RunRow).where(RunRow.id.in_(ids))
                        .execution_options(synchronize_session=False))
        return ids


def get_run(db: Database, run_id: int) -> Run:
    with db.session() as session:
        return Run.from_row(_row(session, run_id))


def list_runs(db: Database, *, status: str | Status | Iterable[str | Status] | None = None,
              ids: Iterable[int] | None = None) -> list[Run]:
    """Runs by id, filtered (``status`` one or several; the report, `runs` and the dashboard
    filter further with `storage.filters.RunFilter`)."""
    query = sa.select(RunRow).order_by(RunRow.id)
    if status is not None:
        wanted = [status] if isinstance(status, str) else list(status)
        query = query.where(RunRow.status.in_([states.status(s).value for s in wanted]))
    if ids is not None:
        query = query.where(RunRow.id.in_(list(ids)))
    with db.session() as session:
        return [Run.from_row(r) for r in session.scalars(query)]


def count_by_status(db: Database) -> dict[Status, int]:
    with db.session() as session:
        rows = session.execute(sa.select(RunRow.status, sa.func.count())
                               .group_by(RunRow.status))
        counts = {s: 0 for s in Status}
        counts.update({Status(s): n for s, n in rows})
        return counts


def record_start(db: Database, run_id: int, worker_id: int | None, *,
                 provenance: Mapping[str, Any] | None = None,
                 config: Mapping[str, Any] | None = None,
                 checkpoint: str | None = None) -> Run:
    """What the worker learned when it started (or resumed) the run: provenance (versions,
    git commit, device, host; `LOST_KEY` kept), the resolved config, the checkpoint path."""
    with db.session(write=True) as session:
        row = _owned_running(session, run_id, worker_id)
        if provenance is not None:
            lost = (row.provenance or {}).get(LOST_KEY)
            row.provenance = {**provenance, **({} if lost is None else {LOST_KEY: lost})}
        if config is not None:
            row.config = dict(config)
        if checkpoint is not None:
            row.checkpoint = checkpoint
        session.flush()
        return Run.from_row(row)


