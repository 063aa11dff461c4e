"""The engine factory, the schema revision check and migrations, on real SQLite files and
(where tests/postgres_db.py has a server) real PostgreSQL databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from diffbench.storage import migrations
from diffbench.storage.db import (
    ENV_VAR,
    Database,
    SchemaOutdated,
    SchemaTooNew,
    StorageError,
    create_engine,
    open_database,
    resolve_url,
)

TABLES = {"runs", "workers", "step_metrics", "epoch_metrics", "samples"}


def test_fresh_database_is_migrated_to_head(url):
    db = open_database(url)
    with db.engine.connect() as connection:
        assert migrations.current(connection) == migrations.head() == "0005"
        assert set(sa.inspect(connection).get_table_names()) >= TABLES
    db.dispose()
    again = open_database(url)  # at head: no-op
    again.dispose()


def test_sqlite_settings(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'sub' / 'jobs.db'}")  # makes the folder
    with db.engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") >= 1000
    db.dispose()


def test_newer_revision_is_refused(url):
    open_database(url).dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(SchemaTooNew, match=r"9999.*newer than this diffbench"):
        open_database(url)


def test_foreign_database_is_refused(url):
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE things (id INTEGER)")
    engine.dispose()
    with pytest.raises(StorageError, match="not a diffbench database"):
        open_database(url)


def test_migration_matches_models(url):
    """The revisions create what the models describe (no autogenerate diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from diffbench.storage.schema import Base

    db = open_database(url)
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.dispose()
    assert [d for d in diff if d[0] != "modify_type"] == []


def test_populated_0002_database_upgrades_to_per_bin_losses(url):
    """A database that an older diffbench filled (a finished run with epochs, at revision
    0002) is refused until upgraded; then its rows read back as before, without per-bin
    losses, and a new run's epochs keep theirs."""
    from alembic import command

    from diffbench.storage import queue as q
    from diffbench.storage import records

    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrations._config(connection), "0002")
    old = Database(engine)  # what the older diffbench wrote, through today's queue API
    with engine.begin() as connection:  # the workers table as 0002 has it (no slurm_job)
        worker = connection.execute(sa.text(
            "INSERT INTO workers (host, pid, device, started_at, heartbeat_at) VALUES "
            "('h', 1, 'cpu', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id")).scalar_one()
    (run_id,) = q.enqueue(old, [q.RunSpec("tiny", "adamw", "linear", 1e-3, 0.01, 0)]).ids
    q.claim_next(old, worker)
    q.record_start(old, run_id, worker, provenance={"device": "cpu"})
    with engine.begin() as connection:  # the 0002 table has no fixed_valid_bins column
        connection.execute(sa.text(
            "INSERT INTO epoch_metrics (run_id, epoch, step, train_loss, train_loss_kind, "
            "valid_loss, valid_loss_kind, fixed_valid_loss, fixed_valid_loss_kind, epoch_s, "
            "valid_s, sample_s, train_s) VALUES (:run, :epoch, :step, :loss, 0, :loss, 0, "
            ":loss, 0, 1.0, 0.1, 0.0, :train_s)"),
            [{"run": run_id, "epoch": e, "step": 5 * (e + 1), "loss": 1.0 / (e + 1),
              "train_s": e + 1.0} for e in range(2)])
    q.finish(old, run_id, worker, "done", summary={"final_fixed_valid_loss": 0.5})
    engine.dispose()

    with pytest.raises(SchemaOutdated, match=r"0002.*diffbench db upgrade"):
        open_database(url)
    db = open_database(url, upgrade=True)
    try:
        with db.engine.connect() as connection:
            assert migrations.current(connection) == migrations.head()
        epochs = records.metrics_since(db, run_id).epochs
        assert [(e.epoch, e.fixed_valid_loss, e.fixed_valid_bins) for e in epochs] == [
            (0, 1.0, None), (1, 0.5, None)]
        assert q.get_run(db, run_id).summary == {"final_fixed_valid_loss": 0.5}
        (new,) = q.enqueue(db, [q.RunSpec("tiny", "muon", "linear", 1e-3, 0.01, 0)]).ids
        q.claim_next(db, worker)
        records.add_epoch_metrics(db, new, [
            {"epoch": 0, "step": 5, "train_loss": 0.9, "valid_loss": 0.8,
             "fixed_valid_loss": 0.7, "epoch_s": 1.0, "valid_s": 0.1, "sample_s": 0.0,
             "train_s": 1.0, "fixed_valid_bins": [0.2, 0.9, 3.5]}])
        (epoch,) = records.metrics_since(db, new).epochs
        assert epoch.fixed_valid_bins == (0.2, 0.9, 3.5)
        epochs = records.metrics_since(db, run_id).epochs
        assert [e.fixed_valid_bins for e in epochs] == [None, None]
    finally:
        db.dispose()


def test_populated_0004_database_upgrades_to_worker_load_and_calibrations(url):
    """A database at revision 0004 with workers (one in a Slurm job), a finished run and its
    metrics is refused until upgraded; then every old row reads as before, the old workers
    have no load (not a zero load), and heartbeats store loads and calibrations are kept."""
    from alembic import command

    from diffbench.storage import calibration, queue, records, workers
    from diffbench.storage.workers import LoadSample

    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrations._config(connection), "0004")
    old = Database(engine)  # what the older diffbench wrote, through the API of its tables
    gpu = workers.register_worker(old, host="gpu-7", pid=7, device="cuda:0",
                                  slurm_job="123_4")
    gone = workers.register_worker(old, host="cpu-1", pid=8, device="cpu")
    workers.stop_worker(old, gone.id)
    (run_id,) = queue.enqueue(old, [queue.RunSpec("tiny", "adamw", "linear", 1e-3, 0.01,
                                                  0)]).ids
    queue.claim_next(old, gpu.id)
    queue.record_start(old, run_id, gpu.id, provenance={"device": "cuda:0",
                                                        "device_name": "H100", "host": "gpu-7"})
    records.add_step_metrics(old, run_id, [
        {"step": 1, "epoch": 0, "loss": 0.5, "lr": 1e-3, "grad_norm": 1.0, "data_ms": 1.0,
         "compute_ms": 20.0, "optimizer_ms": 5.0}], worker_id=gpu.id)
    queue.finish(old, run_id, gpu.id, "done", summary={"ms_per_step": 26.0})
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        before = {name: connection.execute(sa.text(f"SELECT * FROM {name} ORDER BY id")).all()
                  for name in ("workers", "runs", "step_metrics")}
    assert not {"worker_load", "calibrations", "calibration_times"} & tables
    engine.dispose()

    with pytest.raises(SchemaOutdated, match=r"0004.*diffbench db upgrade"):
        open_database(url)
    db = open_database(url, upgrade=True)
    try:
        with db.engine.connect() as connection:
            assert migrations.current(connection) == migrations.head() == "0005"
            for name, rows in before.items():  # every old row as it was
                assert connection.execute(
                    sa.text(f"SELECT * FROM {name} ORDER BY id")).all() == rows
            for name in ("worker_load", "calibrations", "calibration_times"):
                assert connection.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar() == 0
        assert [(w.host, w.slurm_job) for w in workers.list_workers(db)] == [
            ("gpu-7", "123_4"), ("cpu-1", None)]
        assert workers.load_history(db) == {}  # old workers: no load, not zeros
        assert queue.get_run(db, run_id).summary == {"ms_per_step": 26.0}
        queue.heartbeat(db, gpu.id, load=LoadSample(gpu_util=75.0, gpu_memory_used=2**33,
                                                    gpu_memory_total=2**36, cpu_percent=12.5))
        (sample,) = workers.load_history(db)[gpu.id]
        assert (sample.gpu_util, sample.gpu_memory_total, sample.gpu_temp) == (
            75.0, 2**36, None)
        stored = calibration.save_calibration(
            db, device="cuda · H100", preset="tiny", host="gpu-7", steps=20,
            rounds_ms={"adamw": [25.0, 27.0], "muon": [30.0, 31.0]})
        assert calibration.latest(calibration.calibrations(db)) == {
            ("cuda · H100", "tiny"): stored}
        assert stored.ratio("muon", "adamw").value == pytest.approx(61 / 52)
    finally:
        db.dispose()


def test_url_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_url(home=tmp_path) == f"sqlite:///{tmp_path.absolute() / 'diffbench.db'}"
    monkeypatch.setenv(ENV_VAR, "sqlite:///env.db")
    assert resolve_url(home=tmp_path) == "sqlite:///env.db"
    assert resolve_url("sqlite:///flag.db", home=tmp_path) == "sqlite:///flag.db"


def test_bad_urls_are_storage_errors(tmp_path):
    with pytest.raises(StorageError, match="in-memory"):
        create_engine("sqlite://")
    with pytest.raises(StorageError):
        open_database("nosuchdialect://host/db")
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError):
        open_database(f"sqlite:///{tmp_path / 'file' / 'jobs.db'}")  # parent is a file
