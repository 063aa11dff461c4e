"""Upgrading a populated database from revision 0001, the first schema, to the head through
the real code path (`diffbench db upgrade`), on a SQLite file and (tests/postgres_db.py) a
PostgreSQL database.

The old database is made by Alembic at 0001 and filled through its own tables (reflected at
0001, so the rows are what that schema held, not what today's models would write): two
workers, a run in every status with its lease, summary, error and provenance, step metrics
with NaN and ±inf flags, epochs, samples. After the upgrade every old column of every row
is unchanged, each column added since reads as its revision documents for old rows, and
today's queue reads, fences and requeues the old rows.
"""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from diffbench.storage import migrations, records, workers
from diffbench.storage import queue as q
from diffbench.storage.db import SchemaOutdated, create_engine, open_database
from diffbench.storage.states import Status
from diffbench.tui.cli import app

TABLES = ("workers", "runs", "step_metrics", "epoch_metrics", "samples")
T = dt.datetime(2026, 5, 10, 12, 0, 0, 123456)  # naive UTC, as 0001 stored times
#: What the rows already there hold in each column added after 0001, as its revision says.
#: A NOT NULL column added later must be listed here; a nullable one not listed must be NULL.
ADDED_SINCE_0001 = {
    ("epoch_metrics", "fixed_valid_bins"): None,  # 0003: NULL before per-bin losses
}
# the identity hashes 0001 wrote (storage.schema.identity, unchanged since): a run queued
# again after the upgrade must still be found a duplicate of these
ADAMW_0 = "b2571474ea3d3156662e6e7ad256001dd573e072a89b4021ce803e78c45bc7ba"
MUON_1 = "e73a15739c45084e5ffe7df1f77ae0d257ca1f116328f94f5b3192744a76c15a"


def t(seconds: float) -> dt.datetime:
    return T + dt.timedelta(seconds=seconds)


def run_row(status: str, identity: str, **values) -> dict:
    """A runs row as 0001 had it: every column, JSON as strict JSON text."""
    row = dict(status=status, priority=0, preset="tiny", optimizer="adamw", schedule="linear",
               lr=1e-3, weight_decay=0.01, seed=0, epochs=None, overrides="{}",
               identity=identity, tags="[]", config=None, attempts=1, worker_id=None,
               heartbeat_at=None, lease_expires_at=None, cancel_requested=False,
               created_at=t(0), started_at=t(10), finished_at=None, steps_done=0,
               checkpoint=None, provenance=None, summary=None, error=None, traceback=None)
    row.update(values)
    return row


def step_row(run_id: int, step: int, loss: float | None, kind: int | None,
             grad_norm: float | None = 1.5, grad_kind: int | None = 0) -> dict:
    return dict(run_id=run_id, step=step, epoch=(step - 1) // 2, loss=loss, loss_kind=kind,
                lr=1e-3 * step, lr_kind=0, grad_norm=grad_norm, grad_norm_kind=grad_kind,
                data_ms=0.5, compute_ms=10.0 + step, optimizer_ms=2.0)


def epoch_row(run_id: int, epoch: int, train: float | None, train_kind: int | None,
              valid: float | None) -> dict:
    return dict(run_id=run_id, epoch=epoch, step=2 * (epoch + 1), train_loss=train,
                train_loss_kind=train_kind, valid_loss=valid,
                valid_loss_kind=None if valid is None else 0,
                fixed_valid_loss=None if valid is None else valid / 2,
                fixed_valid_loss_kind=None if valid is None else 0, epoch_s=1.25,
                valid_s=0.0 if valid is None else 0.5, sample_s=0.0, train_s=1.25 * (epoch + 1))


VORTICITY = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
ROWS = {
    "workers": [
        dict(host="old-node", pid=11, device="cuda:0", started_at=t(0), heartbeat_at=t(500),
             stopped_at=t(500)),
        dict(host="gpu-7", pid=12, device="cuda:1", started_at=t(5), heartbeat_at=t(900),
             stopped_at=None),
    ],
    "runs": [  # ids 1..6, one per status
        run_row("queued", ADAMW_0, priority=5, tags='["sweep-a"]', attempts=0,
                started_at=None),
        run_row("running", "2" * 64, optimizer="soap", seed=2, attempts=1, worker_id=2,
                heartbeat_at=t(900), lease_expires_at=t(960), steps_done=3,
                checkpoint="/home/runs/2",
                provenance='{"device": "cuda:1", "git_commit": "abc123", "worker_id": 2}'),
        run_row("done", MUON_1, optimizer="muon", schedule="cosine", lr=0.02,
                weight_decay=0.0, seed=1, epochs=40, overrides='{"train.batch_size": 8}',
                config='{"lr": 0.02, "optimizer": "muon"}', attempts=2, worker_id=1,
                finished_at=t(400), steps_done=4, checkpoint="/home/runs/3",
                provenance='{"device": "cuda:0", "threads": 4}',
                summary='{"best_valid_loss": 0.25, "final_train_loss": "NaN", '
                        '"ms_per_step": 12.5}'),
        run_row("failed", "4" * 64, seed=4, attempts=3, finished_at=t(300),
                error="RuntimeError: CUDA out of memory",
                traceback="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA"),
        run_row("diverged", "5" * 64, optimizer="sgd", lr=10.0, seed=5, worker_id=1,
                finished_at=t(200), steps_done=2, error="non-finite loss at step 2",
                summary='{"final_train_loss": "Infinity", "last_step_loss": "-Infinity"}'),
        run_row("cancelled", "6" * 64, seed=6, attempts=0, started_at=None,
                cancel_requested=True),
    ],
    "step_metrics": [
        step_row(2, 1, 0.5, 0), step_row(2, 2, None, 1),  # NaN
        step_row(2, 3, None, 2, grad_norm=None, grad_kind=3),  # +inf loss, -inf norm
        *(step_row(3, s, 1.0 / s, 0) for s in range(1, 5)),
        step_row(5, 1, 3.0, 0), step_row(5, 2, None, 2, grad_norm=None, grad_kind=1),
    ],
    "epoch_metrics": [
        epoch_row(3, 0, 0.75, 0, None), epoch_row(3, 1, 0.3, 0, 0.25),
        epoch_row(5, 0, None, 2, None),
    ],
    "samples": [
        dict(run_id=3, epoch=1, step=4, name="vorticity", shape="[1, 2, 2, 2]", dtype="<f4",
             data=VORTICITY.tobytes()),
        dict(run_id=3, epoch=1, step=4, name="quality", shape="[3]", dtype="<f8",
             data=np.array([0.5, math.pi, -1.0]).tobytes()),
    ],
}


def table_rows(connection: sa.Connection, columns: dict[str, list[str]] | None = None
               ) -> dict[str, list[tuple]]:
    """Every row of every table (only ``columns`` of each, if given), in id order, as the
    database's own reflected tables read them."""
    meta = sa.MetaData()
    meta.reflect(connection, only=TABLES)
    out = {}
    for name in TABLES:
        table = meta.tables[name]
        names = columns[name] if columns else [c.name for c in table.columns]
        out[name] = [tuple(r) for r in connection.execute(
            sa.select(*(table.c[n] for n in names)).order_by(table.c.id))]
    return out


def column_names(connection: sa.Connection) -> dict[str, list[str]]:
    inspector = sa.inspect(connection)
    return {name: [c["name"] for c in inspector.get_columns(name)] for name in TABLES}


def test_populated_0001_database_upgrades_with_every_row_intact(url, tmp_path):
    from alembic import command

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(migrations._config(connection), "0001")
        with engine.begin() as connection:  # 0001's own tables, reflected
            meta = sa.MetaData()
            meta.reflect(connection, only=TABLES)
            for name in TABLES:
                connection.execute(meta.tables[name].insert(), ROWS[name])
        with engine.connect() as connection:
            old_columns = column_names(connection)
            before = table_rows(connection)
    finally:
        engine.dispose()
    assert [row[0] for row in before["runs"]] == [1, 2, 3, 4, 5, 6]
    assert {name: len(rows) for name, rows in before.items()} == {
        name: len(rows) for name, rows in ROWS.items()}

    with pytest.raises(SchemaOutdated, match=r"revision 0001.*diffbench db upgrade"):
        open_database(url)
    result = CliRunner(env={"NO_COLOR": "1", "DIFFBENCH_DB": None}).invoke(
        app, ["--home", str(tmp_path / "home"), "--db", url, "db", "upgrade", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["before"] == "0001"
    assert json.loads(result.stdout)["after"] == migrations.head()

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            assert migrations.current(connection) == migrations.head()
            assert table_rows(connection, old_columns) == before  # every old value kept
            new_columns = column_names(connection)
            nullable = {(name, c["name"]): c["nullable"] for name in TABLES
                        for c in sa.inspect(connection).get_columns(name)}
            added = {(name, c) for name in TABLES for c in new_columns[name]
                     if c not in old_columns[name]}
            assert set(ADDED_SINCE_0001) <= added
            for name, column in sorted(added):
                assert (name, column) in ADDED_SINCE_0001 or nullable[name, column], (
                    f"{name}.{column} is NOT NULL: say in ADDED_SINCE_0001 what old rows hold")
                values = connection.execute(sa.text(f"SELECT {column} FROM {name}")).scalars()
                expected = ADDED_SINCE_0001.get((name, column))
                assert set(values) == {expected}, f"{name}.{column}"
    finally:
        engine.dispose()

    db = open_database(url)  # at the head: no upgrade needed now
    try:
        check_old_rows_through_todays_api(db)
    finally:
        db.dispose()


def check_old_rows_through_todays_api(db) -> None:
    """Today's queue and records read the old rows as they were meant, and act on them."""
    runs = q.list_runs(db)
    assert [(r.status, r.attempts, r.worker_id) for r in runs] == [
        (Status.QUEUED, 0, None), (Status.RUNNING, 1, 2), (Status.DONE, 2, 1),
        (Status.FAILED, 3, None), (Status.DIVERGED, 1, 1), (Status.CANCELLED, 0, None)]
    queued, running, done, failed, diverged, cancelled = runs
    utc = dt.UTC  # read back aware
    assert (queued.priority, queued.tags, queued.started_at) == (5, ("sweep-a",), None)
    assert running.lease_expires_at == t(960).replace(tzinfo=utc)
    assert running.provenance == {"device": "cuda:1", "git_commit": "abc123", "worker_id": 2}
    assert (done.overrides, done.config, done.epochs) == (
        {"train.batch_size": 8}, {"lr": 0.02, "optimizer": "muon"}, 40)
    assert math.isnan(done.summary["final_train_loss"]) and done.summary["ms_per_step"] == 12.5
    assert done.created_at == T.replace(tzinfo=utc) and done.finished_at == t(400).replace(
        tzinfo=utc)
    assert failed.error == "RuntimeError: CUDA out of memory"
    assert failed.traceback.startswith("Traceback")
    assert diverged.summary == {"final_train_loss": math.inf, "last_step_loss": -math.inf}
    assert cancelled.cancel_requested is True

    steps = records.metrics_since(db, running.id).steps
    assert steps[0].loss == 0.5 and math.isnan(steps[1].loss) and steps[2].loss == math.inf
    assert steps[2].grad_norm == -math.inf and [s.step for s in steps] == [1, 2, 3]
    batch = records.metrics_since(db, done.id)
    assert [s.loss for s in batch.steps] == [1.0, 0.5, 1 / 3, 0.25]
    assert [(e.epoch, e.valid_loss, e.fixed_valid_loss, e.fixed_valid_bins)
            for e in batch.epochs] == [(0, None, None, None), (1, 0.25, 0.125, None)]
    assert records.metrics_since(db, diverged.id).epochs[0].train_loss == math.inf
    (preview,) = batch.sample_ids  # the preview; the quality sample by its id
    np.testing.assert_array_equal(records.get_sample(db, preview).array(), VORTICITY)
    quality = records.get_sample(db, preview + 1)
    assert quality.name == "quality" and quality.array()[1] == math.pi
    old, live = workers.list_workers(db)
    assert (old.host, old.pid, old.device, old.stopped_at) == (
        "old-node", 11, "cuda:0", t(500).replace(tzinfo=utc))
    assert (live.host, live.stopped_at) == ("gpu-7", None)

    # the same runs queued again are duplicates of the old ones (same identity hash)
    again = q.enqueue(db, [q.RunSpec("tiny", "adamw", "linear", 1e-3, 0.01, 0),
                           q.RunSpec("tiny", "muon", "cosine", 0.02, 0.0, 1, epochs=40,
                                     overrides={"train.batch_size": 8})])
    assert again.ids == () and [run_id for _, run_id in again.skipped] == [1, 3]
    # the running run is fenced by its old worker's id, and losing it is counted
    assert not q.heartbeat(db, 2, running.id).lost
    records.add_step_metrics(db, running.id, [dict(
        step=4, epoch=1, loss=0.4, lr=1e-3, grad_norm=1.0, data_ms=0.1, compute_ms=1.0,
        optimizer_ms=0.1)], worker_id=2)
    with pytest.raises(q.LeaseLost, match="worker 2 holds it"):
        records.add_epoch_metrics(db, running.id, [dict(
            epoch=1, step=4, train_loss=0.4, valid_loss=None, fixed_valid_loss=None,
            epoch_s=1.0, valid_s=0.0, sample_s=0.0, train_s=2.0)], worker_id=1)
    far = workers.database_now(db) + dt.timedelta(days=1)
    assert q.requeue_stale(db, now=far, max_attempts=1) == (running.id,)
    lost = q.get_run(db, running.id)
    assert lost.status == Status.FAILED and lost.steps_done == 4
    assert lost.error.startswith("lost its worker 1 time (last: worker 2 on host gpu-7, ")
    assert lost.provenance["workers_lost"] == 1 and lost.provenance["git_commit"] == "abc123"
    # old final runs retry, and the queue claims by priority as before
    assert q.retry(db, [failed.id]) == (failed.id,)
    worker = workers.register_worker(db, host="new", pid=1, device="cpu").id
    assert q.claim_next(db, worker).id == queued.id  # priority 5 first
    assert q.claim_next(db, worker).id == failed.id
    assert q.claim_next(db, worker) is None
