"""How long one refresh of `diffbench tui` takes on a large job database.

Builds a synthetic SQLite database of 1,000 runs (100 running, 700 done, 100 queued, 50
failed, 50 diverged) and 1,000,000 step rows plus 10 epoch rows per started run, with bulk
inserts. Then, between refreshes, "workers" append 10 steps to each running run (1,000 new
rows), and the benchmark times:

* read: `DashboardReader.refresh()` + `SeriesCache.update()` of the selected run (what the
  dashboard's thread worker does every tick);
* apply: pushing the result into the widgets of the real app (headless, 160×48), on the UI
  thread.

Goal: median read + apply ≤ 100 ms. Run: .venv/bin/python benchmarks/tui_refresh.py
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import statistics
import tempfile
import time
from pathlib import Path

from diffbench.storage.db import Database, open_database
from diffbench.storage.schema import identity
from diffbench.storage.workspace import Workspace
from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions
from diffbench.tui.dashboard.series import SeriesCache
from diffbench.tui.dashboard.state import DashboardReader

OPTIMIZERS = ("adamw", "sgd", "muon", "soap", "schedulefree", "prodigy")
STATUSES = ["running"] * 100 + ["done"] * 700 + ["queued"] * 100 + ["failed"] * 50 \
    + ["diverged"] * 50
T0 = "2026-01-01 00:00:00.000000"


def build(path: Path, runs: int, steps: int) -> Database:
    """The synthetic database (raw executemany: about 10 s for a million rows)."""
    db = open_database(f"sqlite:///{path}")
    rng = random.Random(0)
    started = [i for i in range(1, runs + 1) if STATUSES[(i - 1) % len(STATUSES)] != "queued"]
    per_run = steps // len(started)
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("BEGIN")
        cursor.executemany(
            "INSERT INTO workers (id, host, pid, device, started_at, heartbeat_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            [(w, f"node{w}", 1000 + w, f"cuda:{w % 8}", T0, T0) for w in range(1, 101)])
        rows = []
        for i in range(1, runs + 1):
            status = STATUSES[(i - 1) % len(STATUSES)]
            optimizer = OPTIMIZERS[i % len(OPTIMIZERS)]
            key = identity("paper", optimizer, "linear", 1e-3, 0.0, i, 10, {})
            rows.append((i, status, 0, "paper", optimizer, "linear", 1e-3, 0.0, i, 10, "{}", key,
                         "[]", None if status == "queued" else 1,
                         None if status != "running" else (i % 100) + 1, 0, T0,
                         0 if status == "queued" else per_run,
                         None if status == "queued" else '{"device": "cuda:0", '
                         '"device_name": "H100"}'))
        cursor.executemany(
            "INSERT INTO runs (id, status, priority, preset, optimizer, schedule, lr, "
            "weight_decay, seed, epochs, overrides, identity, tags, attempts, worker_id, "
            "cancel_requested, created_at, steps_done, provenance) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, coalesce(?, 0), ?, ?, ?, ?, ?)",
            rows)
        for run_id in started:
            cursor.executemany(
                "INSERT INTO step_metrics (run_id, step, epoch, loss, loss_kind, lr, lr_kind, "
                "grad_norm, grad_norm_kind, data_ms, compute_ms, optimizer_ms) "
                "VALUES (?, ?, ?, ?, 0, 1e-3, 0, 1.0, 0, 1.0, ?, ?)",
                [(run_id, s, s * 10 // per_run, 1.0 / s, 20 + rng.random(), 5.0)
                 for s in range(1, per_run + 1)])
            cursor.executemany(
                "INSERT INTO epoch_metrics (run_id, epoch, step, train_loss, train_loss_kind, "
                "valid_loss, valid_loss_kind, fixed_valid_loss, fixed_valid_loss_kind, "
                "epoch_s, valid_s, sample_s, train_s) "
                "VALUES (?, ?, ?, ?, 0, ?, 0, ?, 0, 30.0, 1.0, 0.0, ?)",
                [(run_id, e, (e + 1) * per_run // 10, 1.0 / (e + 1), 1.1 / (e + 1),
                  1.1 / (e + 1), 30.0 * (e + 1)) for e in range(10)])
        cursor.execute("COMMIT")
    finally:
        connection.close()
    return db


def append_steps(db: Database, running: list[int], count: int) -> None:
    """What the workers write between two refreshes: ``count`` steps per running run."""
    connection = db.engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        for run_id in running:
            (last,) = cursor.execute("SELECT max(step) FROM step_metrics WHERE run_id = ?",
                                     (run_id,)).fetchone()
            cursor.executemany(
                "INSERT INTO step_metrics (run_id, step, epoch, loss, loss_kind, data_ms, "
                "compute_ms, optimizer_ms) VALUES (?, ?, 9, 0.01, 0, 1.0, 20.0, 5.0)",
                [(run_id, last + k, ) for k in range(1, count + 1)])
        cursor.execute("COMMIT")
    finally:
        connection.close()


def time_reads(db: Database, running: list[int], repeats: int) -> tuple[float, list[float]]:
    reader, series = DashboardReader(db), SeriesCache(db)
    start = time.perf_counter()
    reader.refresh()
    series.update([running[0]])
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        append_steps(db, running, 10)
        start = time.perf_counter()
        reader.refresh()
        series.update([running[0]])
        times.append(time.perf_counter() - start)
    return first, times


async def time_app(db: Database, home: Path, running: list[int], repeats: int
                   ) -> tuple[list[float], list[float]]:
    """Read and apply times inside the real (headless) app."""
    app = DashboardApp(db, Workspace.resolve(home), DashboardOptions(refresh_s=3600))
    reads_ms: list[float] = []
    applies: list[float] = []
    read, update, apply = app.reader.refresh, app.series.update, app._apply

    def timed_read():
        start = time.perf_counter()
        out = read()
        reads_ms.append(time.perf_counter() - start)
        return out

    def timed_update(run_ids):
        start = time.perf_counter()
        out = update(run_ids)
        reads_ms[-1] += time.perf_counter() - start
        return out

    def timed_apply(*args):
        start = time.perf_counter()
        apply(*args)
        applies.append(time.perf_counter() - start)

    app.reader.refresh, app.series.update, app._apply = timed_read, timed_update, timed_apply
    async with app.run_test(size=(160, 48)) as pilot:
        for _ in range(repeats + 2):
            append_steps(db, running, 10)
            app.refresh_data()
            while app._reading:
                await pilot.pause(0.01)
    return reads_ms[2:], applies[2:]  # the first ones load everything


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        db = build(Path(folder) / "bench.db", args.runs, args.steps)
        print(f"built {args.runs} runs, {args.steps:,} step rows in "
              f"{time.perf_counter() - start:.1f} s")
        running = [i for i in range(1, args.runs + 1)
                   if STATUSES[(i - 1) % len(STATUSES)] == "running"]
        first, reads_ms = time_reads(db, running, args.repeats)
        print(f"first load (aggregate over all steps): {first * 1000:.0f} ms")
        print(f"read per refresh (+{len(running) * 10} rows): median "
              f"{statistics.median(reads_ms) * 1000:.1f} ms, max {max(reads_ms) * 1000:.1f} ms")
        app_reads, applies = asyncio.run(time_app(db, Path(folder), running, args.repeats))
        total = statistics.median(app_reads) + statistics.median(applies)
        print(f"in the app: read median {statistics.median(app_reads) * 1000:.1f} ms, "
              f"apply to widgets median {statistics.median(applies) * 1000:.1f} ms")
        print(f"median refresh (read + apply): {total * 1000:.1f} ms (goal ≤ 100 ms) at "
              f"{dt.datetime.now():%Y-%m-%d %H:%M}")
        db.dispose()


if __name__ == "__main__":
    main()
