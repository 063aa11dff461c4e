"""Workers on Slurm: the workers table's host rule and Slurm job column, `diffbench slurm`'s
command line (nothing submitted), and, where a Slurm cluster is up (`bash .ci/slurm …` sets
DIFFBENCH_TEST_SLURM=1), real job arrays that drain a queue while one of them is preempted."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from diffbench.storage import hosts, migrations, workers
from diffbench.storage.db import Database, create_engine, open_database
from diffbench.tui.cli import app
from tests.postgres_db import KINDS, database_url, fresh_postgres


@pytest.fixture(params=KINDS)
def url(request, tmp_path):
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def runner():
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None,
                          "DIFFBENCH_HOME": None})


# ----------------------------------------------------------------------------- workers table


def test_populated_0003_database_upgrades_to_slurm_jobs(url):
    """A database an older diffbench filled (workers, a finished run, at revision 0003) is
    refused until upgraded; its workers then read back without a Slurm job, new ones keep
    theirs."""
    from alembic import command

    from diffbench.storage import queue as q
    from diffbench.storage.db import SchemaOutdated

    engine = create_engine(url)
    with engine.begin() as connection:
        command.upgrade(migrations._config(connection), "0003")
        worker = connection.execute(sa.text(
            "INSERT INTO workers (host, pid, device, started_at, heartbeat_at) VALUES "
            "('old-host', 7, 'cuda:0', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP) RETURNING id")
        ).scalar_one()
    old = Database(engine)
    (run_id,) = q.enqueue(old, [q.RunSpec("tiny", "adamw", "linear", 1e-3, 0.01, 0)]).ids
    q.claim_next(old, worker)
    q.finish(old, run_id, worker, "done", summary={"final_fixed_valid_loss": 0.5})
    engine.dispose()

    with pytest.raises(SchemaOutdated, match=r"0003.*diffbench db upgrade"):
        open_database(url)
    db = open_database(url, upgrade=True)
    try:
        with db.engine.connect() as connection:
            assert migrations.current(connection) == migrations.head() == "0004"
        (before,) = workers.list_workers(db)
        assert (before.host, before.pid, before.device, before.slurm_job) == (
            "old-host", 7, "cuda:0", None)
        assert q.get_run(db, run_id).status == "done"
        new = workers.register_worker(db, host="node1", pid=8, device="cpu",
                                      slurm_job="41_3")
        assert [w.slurm_job for w in workers.list_workers(db)] == [None, "41_3"]
        assert new.slurm_job == "41_3"
    finally:
        db.dispose()


def test_sqlite_refuses_a_second_live_host(tmp_path):
    """On SQLite, ``one_host`` refuses a worker while another host's worker is live (its
    heartbeat within the grace), naming PostgreSQL; the same host, a stopped or silent
    worker of another host, and callers without ``one_host`` pass."""
    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        now = workers.database_now(db)
        other = workers.register_worker(db, host="node-a", pid=1, device="cpu", now=now,
                                        one_host=True)
        workers.register_worker(db, host="node-a", pid=2, device="cpu", now=now,
                                one_host=True)
        with pytest.raises(hosts.SharedSQLite) as refused:
            workers.register_worker(db, host="node-b", pid=3, device="cpu", one_host=True,
                                    now=now + dt.timedelta(seconds=30))
        message = str(refused.value)
        assert "node-a" in message and "PostgreSQL" in message and "\n" not in message
        assert "30 s ago" in message
        workers.register_worker(db, host="node-b", pid=4, device="cpu", now=now)  # not asked
        later = now + dt.timedelta(seconds=hosts.LIVE_GRACE_S + 1)  # node-a's beats are old
        workers.stop_worker(db, 4, now=later)
        assert workers.register_worker(db, host="node-b", pid=5, device="cpu", now=later,
                                       one_host=True).host == "node-b"
        workers.stop_worker(db, other.id, now=now)
    finally:
        db.dispose()


def test_postgres_takes_any_host(tmp_path):
    """The rule is SQLite's: a PostgreSQL database takes workers of any host."""
    with fresh_postgres() as url:
        db = open_database(url)
        try:
            workers.register_worker(db, host="node-a", pid=1, device="cpu", one_host=True)
            workers.register_worker(db, host="node-b", pid=2, device="cpu", one_host=True)
            assert {w.host for w in workers.list_workers(db)} == {"node-a", "node-b"}
        finally:
            db.dispose()


def test_worker_command_refuses_a_sqlite_file_another_host_uses(tmp_path, runner):
    """`diffbench worker` on a SQLite file that a live worker of another host uses exits 2
    with one line naming PostgreSQL, and registers nothing."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    workers.register_worker(db, host="elsewhere", pid=1, device="cpu")
    db.dispose()
    result = runner.invoke(app, ["--home", str(tmp_path), "worker", "--db", url,
                                 "--device", "cpu", "--idle-exit", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "PostgreSQL" in result.stderr
    assert "elsewhere" in result.stderr
    db = open_database(url)
    assert [w.host for w in workers.list_workers(db)] == ["elsewhere"]
    db.dispose()


def test_workers_ls_shows_slurm_jobs(tmp_path, runner):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    workers.register_worker(db, host="node1", pid=11, device="cuda:0", slurm_job="812_0")
    workers.register_worker(db, host="node1", pid=12, device="cpu")
    db.dispose()
    rows = json.loads(runner.invoke(app, ["--db", url, "workers", "ls", "--json"]).stdout)
    assert [(r["host"], r["slurm_job"]) for r in rows] == [("node1", "812_0"), ("node1", None)]
    table = runner.invoke(app, ["--db", url, "workers", "ls"])
    assert table.exit_code == 0 and "slurm_job" in table.stdout and "812_0" in table.stdout


def test_sqlite_on_a_network_file_system_is_warned(tmp_path):
    table = tmp_path / "mounts"
    table.write_text("server:/export /mnt/shared nfs4 rw,relatime 0 0\n"
                     "/dev/vda / ext4 rw 0 0\n")
    warning = hosts.network_warning("sqlite:////mnt/shared/study/diffbench.db", str(table))
    assert warning and "nfs4" in warning and "PostgreSQL" in warning
    assert hosts.network_warning("sqlite:////home/me/diffbench.db", str(table)) is None
    assert hosts.network_warning("postgresql://u@h/db", str(table)) is None
    assert hosts.filesystem(tmp_path / "missing" / "x.db", str(table)) == "ext4"
    assert hosts.sqlite_file("sqlite:///rel.db").is_absolute()
    assert hosts.sqlite_file("sqlite://") is None
