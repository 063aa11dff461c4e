"""`diffbench workers ls`: live, dead and stopped workers of a real SQLite job database."""

from __future__ import annotations

import datetime as dt
import json

from typer.testing import CliRunner

from diffbench.storage.db import open_database
from diffbench.storage.workers import database_now, register_worker, stop_worker
from diffbench.tui.cli import app


def test_workers_ls_tells_alive_dead_and_stopped(tmp_path):
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    try:
        now = database_now(db)
        register_worker(db, host="gpu-a", pid=11, device="cuda:0", now=now)
        register_worker(db, host="gpu-b", pid=22, device="cuda:1",
                        now=now - dt.timedelta(minutes=10))
        gone = register_worker(db, host="cpu-c", pid=33, device="cpu", now=now)
        stop_worker(db, gone.id, now=now)
    finally:
        db.dispose()
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None})

    result = runner.invoke(app, ["--db", url, "workers", "ls", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["host"], r["pid"], r["device"], r["state"]) for r in rows] == [
        ("gpu-a", 11, "cuda:0", "alive"), ("gpu-b", 22, "cuda:1", "dead"),
        ("cpu-c", 33, "cpu", "stopped")]
    assert rows[1]["seconds_since_heartbeat"] >= 600

    table = runner.invoke(app, ["--db", url, "workers", "ls", "--grace", "3600"])
    assert table.exit_code == 0
    assert table.stdout.count("alive") == 2 and "dead" not in table.stdout

    bad = runner.invoke(app, ["--db", url, "workers", "ls", "--grace", "0"])
    assert bad.exit_code == 2 and "--grace must be positive" in bad.stderr
