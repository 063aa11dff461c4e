"""PostgreSQL, the job database of workers on several machines: URLs, row locks that claims
skip, migrations under concurrent first opens, the CLI and 4 real `diffbench worker`
processes, each on a fresh database of the server in ``$DIFFBENCH_TEST_POSTGRES_URL``
(`bash .ci/postgres CMD` starts a throwaway one; without it these tests skip). The queue's
and migrations' own tests run on PostgreSQL too (test_storage_queue.py, test_storage_db.py).
"""

from __future__ import annotations

import json
import multiprocessing
import re
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from cli_checks import assert_one_line_error
from typer.testing import CliRunner

from diffbench.storage import migrations, records, workers
from diffbench.storage import queue as q
from diffbench.storage.db import StorageError, create_engine, open_database
from diffbench.storage.states import Status
from diffbench.tui.cli import app
from tests.postgres_db import fresh_postgres


@pytest.fixture
def url():
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None,
                          "DIFFBENCH_HOME": None, "DIFFBENCH_PRESET": None})


def spec(seed: int, **changes) -> q.RunSpec:
    values = {"preset": "tiny", "optimizer": "adamw", "schedule": "linear", "lr": 1e-3,
              "weight_decay": 0.0, "seed": seed, **changes}
    return q.RunSpec(**values)


# ----------------------------------------------------------------------------- URLs


def test_postgres_urls_mean_psycopg_3():
    """SQLAlchemy reads a driverless ``postgresql://`` as psycopg2; diffbench installs and
    uses psycopg 3. A driver named in the URL is kept (and its absence said plainly)."""
    for url in ("postgresql://u@db.example/jobs", "postgres://u@db.example/jobs",
                "postgresql+psycopg://u@db.example/jobs"):
        engine = create_engine(url)
        assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg"), url
        assert engine.url.render_as_string() == "postgresql+psycopg://u@db.example/jobs"
        engine.dispose()
    with pytest.raises(StorageError, match="psycopg2") as error:
        open_database("postgresql+psycopg2://u:secret@db.example/jobs")
    assert "secret" not in str(error.value)  # the password is never echoed


def test_long_preset_paths_are_kept_and_long_names_refused_by_name(url):
    """PostgreSQL enforces VARCHAR lengths (SQLite does not): a preset path of any length
    is kept (TEXT since revision 0002), an overlong schedule is refused before anything is
    written, naming the field."""
    db = open_database(url)
    try:
        long_path = "/" + "d" * 70 + "/p.toml"
        (run_id,) = q.enqueue(db, [spec(0, preset=long_path)]).ids
        assert q.get_run(db, run_id).preset == long_path
        with pytest.raises(StorageError, match=r"schedule 'x+' is longer than the 64"):
            q.enqueue(db, [spec(1), spec(2, schedule="x" * 65)])
        assert [run.id for run in q.list_runs(db)] == [run_id]
    finally:
        db.dispose()


# ----------------------------------------------------------------------------- locks


def test_claims_and_requeue_skip_rows_another_transaction_locks(url):
    """A row another transaction holds (as a claim or a finish does) is skipped by claims
    and by `requeue_stale`, not waited for; cancel waits for it. ``lock_timeout`` turns a
    wait into an error, so a claim that blocked would fail here instead of hanging."""
    waiting = sa.make_url(url).update_query_dict({"options": "-c lock_timeout=2000"})
    db = open_database(waiting.render_as_string(hide_password=False))
    holder = create_engine(url)
    try:
        worker = workers.register_worker(db, host="h", pid=1, device="cpu")
        q.enqueue(db, [spec(s) for s in range(4)])
        with holder.connect() as connection, connection.begin():
            connection.execute(sa.text("SELECT id FROM runs WHERE id = 1 FOR UPDATE"))
            assert q.claim_next(db, worker.id).id == 2  # run 1 is first in line, but held
            with pytest.raises(StorageError, match="lock timeout"):
                q.cancel(db, [1])
        assert q.claim_next(db, worker.id).id == 1  # released: claimable again
        assert q.get_run(db, 1).status == Status.RUNNING  # the cancel changed nothing

        far = workers.database_now(db).replace(year=2100)
        with holder.connect() as connection, connection.begin():
            connection.execute(sa.text("SELECT id FROM runs WHERE id = 1 FOR UPDATE"))
            assert q.requeue_stale(db, now=far) == (2,)  # run 1 is its holder's business
        assert q.requeue_stale(db, now=far) == (1,)
        assert {r.id: r.status for r in q.list_runs(db)} == {
            1: Status.QUEUED, 2: Status.QUEUED, 3: Status.QUEUED, 4: Status.QUEUED}
    finally:
        holder.dispose()
        db.dispose()


def _open(url: str, barrier, results) -> None:
    barrier.wait(timeout=60)
    db = open_database(url)
    with db.engine.connect() as connection:
        results.put(migrations.current(connection))
    db.dispose()


def test_four_processes_opening_a_fresh_database_migrate_it_once(url):
    """Workers started together on an empty database: one migrates, the others wait for
    it (an advisory lock) and find it at the head."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_open, args=(url, barrier, results))
                 for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert [results.get(timeout=5) for _ in processes] == [migrations.head()] * 4


# ----------------------------------------------------------------------------- the CLI


def test_cli_on_postgres(runner, url):
    upgrade = runner.invoke(app, ["--db", url, "db", "upgrade", "--json"])
    assert upgrade.exit_code == 0, upgrade.stderr
    report = json.loads(upgrade.stdout)
    assert (report["before"], report["after"]) == (None, migrations.head())
    engine = create_engine(url)
    with engine.connect() as connection:
        assert {"runs", "workers", "step_metrics"} <= set(sa.inspect(connection)
                                                          .get_table_names())
    engine.dispose()

    add = ["--db", url, "queue", "add", "-p", "tiny", "-O", "adamw,sgd", "--lr", "1e-3",
           "--seeds", "0-1", "--tag", "pg"]
    added = runner.invoke(app, add)
    assert added.exit_code == 0, added.stderr
    assert [int(i) for i in added.stdout.split()] == [1, 2, 3, 4]
    again = runner.invoke(app, add)  # duplicates of queued runs: skipped
    assert again.exit_code == 0 and again.stdout.split() == [], again.stdout

    listed = json.loads(runner.invoke(app, ["--db", url, "queue", "ls", "--json"]).stdout)
    assert [(r["id"], r["status"], r["optimizer"], r["seed"]) for r in listed] == [
        (1, "queued", "adamw", 0), (2, "queued", "adamw", 1), (3, "queued", "sgd", 0),
        (4, "queued", "sgd", 1)]
    assert runner.invoke(app, ["--db", url, "queue", "cancel", "2"]).exit_code == 0

    rows = json.loads(runner.invoke(app, ["--db", url, "runs", "ls", "--json"]).stdout)
    assert {r["id"]: r["status"] for r in rows} == {1: "queued", 2: "cancelled",
                                                    3: "queued", 4: "queued"}
    table = runner.invoke(app, ["--db", url, "runs", "ls"])
    assert table.exit_code == 0 and "cancelled" in table.stdout and "sgd" in table.stdout
    assert_one_line_error(runner.invoke(app, ["--db", url, "queue", "cancel", "9"]),
                          "no run with id 9")


# ----------------------------------------------------------------------------- workers


@pytest.mark.slow
def test_four_workers_on_postgres_claim_each_of_40_runs_exactly_once(url, tmp_path_factory):
    """4 real `diffbench worker` processes share one PostgreSQL queue of 40 runs of one
    step each (a cut-down `tiny`; its data set made up front): every run is claimed once,
    by one worker, and ends done."""
    import torch

    from diffbench.engine.config import load_preset
    from diffbench.engine.dataset import generate_dataset
    from tests.helpers import data_file, drain, preset_toml, quick
    from tests.helpers import spec as worker_spec

    folder = tmp_path_factory.mktemp("pg")  # short: a preset path fits its 64-char column
    home, toml = folder / "home", folder / "pgone.toml"
    cheap = {"train.epochs": 1, "train.samples_every": 0, "train.batch_size": 8,
             "model.channels": [4, 8], "quality.enabled": False}
    toml.write_text(preset_toml(quick(**cheap)))
    generate_dataset(load_preset(str(toml)), data_file(home, toml),
                     device=torch.device("cpu"))
    db = open_database(url)
    try:
        ids = q.enqueue(db, [worker_spec(toml, seed=s) for s in range(40)]).ids
        given = SimpleNamespace(url=url)  # spawn reads .url; Database.url hides a password
        logs = drain(home, given, workers=4, seconds=180)
        assert all("on postgresql+psycopg://" in log for log in logs), logs
        claims = [int(m) for log in logs for m in re.findall(r": run (\d+) \(attempt ", log)]
        assert sorted(claims) == sorted(ids), logs  # each run claimed once, by one worker
        runs = q.list_runs(db, ids=ids)
        assert [r.status for r in runs] == [Status.DONE] * 40, [(r.id, r.error) for r in runs]
        assert all(r.attempts == 1 and r.steps_done > 0 for r in runs)
        worker_ids = {w.id for w in workers.list_workers(db)}
        assert len(worker_ids) == 4 and {r.worker_id for r in runs} <= worker_ids
        assert len({r.worker_id for r in runs}) >= 2  # they did share the queue
        for run in runs:
            steps = [s.step for s in records.metrics_since(db, run.id).steps]
            assert steps == list(range(1, run.steps_done + 1))  # each step written once
    finally:
        db.dispose()

