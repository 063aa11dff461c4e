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


def test_workers_ls_shows_the_load_and_absent_sensors(tmp_path):
    from diffbench.storage import queue
    from diffbench.storage.workers import LoadSample

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    gib = 2**30
    try:
        gpu = register_worker(db, host="gpu-a", pid=11, device="cuda:0")
        blind = register_worker(db, host="gpu-b", pid=12, device="cuda:0")
        register_worker(db, host="new", pid=13, device="cpu")
        for util in (10.0, 50.0, 90.0):
            queue.heartbeat(db, gpu.id, load=LoadSample(
                gpu_util=util, gpu_memory_used=20 * gib, gpu_memory_total=80 * gib,
                gpu_temp=61.0, cpu_percent=35.0, ram_used=6 * gib, ram_total=32 * gib))
        queue.heartbeat(db, blind.id, load=LoadSample(cpu_percent=5.0, ram_used=gib,
                                                       ram_total=16 * gib))
    finally:
        db.dispose()
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None})

    result = runner.invoke(app, ["--db", url, "workers", "ls", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["host"]: r for r in json.loads(result.stdout)}
    load = rows["gpu-a"]["load"]
    assert set(load) == {"at", "gpu_util_percent", "gpu_memory_used_bytes",
                         "gpu_memory_total_bytes", "gpu_temperature_c", "cpu_percent",
                         "ram_used_bytes", "ram_total_bytes"}
    assert load["gpu_util_percent"] == 90.0 and load["gpu_memory_total_bytes"] == 80 * gib
    assert load["gpu_temperature_c"] == 61.0 and load["ram_used_bytes"] == 6 * gib
    stamped = dt.datetime.fromisoformat(load["at"]) - dt.datetime.fromisoformat(
        rows["gpu-a"]["heartbeat_at"])  # the last heartbeat's (same transaction)
    assert abs(stamped.total_seconds()) < 1
    absent = rows["gpu-b"]["load"]  # no GPU sensor: null, not 0
    assert absent["gpu_util_percent"] is None and absent["gpu_memory_used_bytes"] is None
    assert absent["cpu_percent"] == 5.0
    assert rows["new"]["load"] is None  # no heartbeat with a load yet

    table = runner.invoke(app, ["--db", url, "workers", "ls"])
    assert table.exit_code == 0
    line = {h: next(x for x in table.stdout.splitlines() if h in x)
            for h in ("gpu-a", "gpu-b", "new")}
    assert "90%" in line["gpu-a"] and "20.0/80G" in line["gpu-a"] and "61°C" in line["gpu-a"]
    assert "▁" in line["gpu-a"] and "█" in line["gpu-a"]  # 10 → 90 %: the sparkline rises
    assert "no GPU sensor" in line["gpu-b"] and "1.0/16G" in line["gpu-b"]
    assert "no GPU sensor" not in line["new"]
