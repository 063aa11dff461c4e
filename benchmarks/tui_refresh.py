"""How long one refresh of `diffbench tui` takes on a large job database.

Builds a synthetic SQLite database of 1,000 runs (100 running, 700 done, 100 queued, 50
failed, 50 diverged), 100 workers and 1,000,000 step rows plus 10 epoch rows per started
run, with bulk inserts. Then it drives the real app (headless, 160×48, every pane visible,
the first run selected: a running one, so its curves change every tick) through Textual's
pilot. Before each tick "workers" append 10 steps to each running run (1,000 new rows); a
tick is what the app does on its timer, timed in three parts, each as wall time and as CPU
time of its thread (the CPU time does not count waiting for a busy machine's cores):

* read: `DashboardReader.refresh()` + `SeriesCache.update()` on the read thread;
* apply: `DashboardApp._apply`, pushing the snapshot into the widgets (UI thread);
* paint: the screen update that follows (layout and rendering of the changed widgets).

Goal: median read + apply + paint ≤ 100 ms. With ``--baseline-ref REF`` (a git commit) the
same ticks also run against that commit's code, alternating with the current code round by
round, so both see the same machine load (only the dashboard's code, tui/ and
storage/reads.py, comes from REF); the medians are printed side by side.

    .venv/bin/python benchmarks/tui_refresh.py [--rounds 3 --ticks 10] [--baseline-ref REF]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPTIMIZERS = ("adamw", "sgd", "muon", "soap", "schedulefree", "prodigy")
STATUSES = ["running"] * 100 + ["done"] * 700 + ["queued"] * 100 + ["failed"] * 50 \
    + ["diverged"] * 50
T0 = "2026-01-01 00:00:00.000000"
PARTS = ("read", "apply", "paint")
ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, runs: int, steps: int) -> None:
    """The synthetic database (raw executemany: about 10 s for a million rows)."""
    from diffbench.storage.db import open_database
    from diffbench.storage.schema import identity

    open_database(f"sqlite:///{path}").dispose()  # the schema
    rng = random.Random(0)
    started = [i for i in range(1, runs + 1) if STATUSES[(i - 1) % len(STATUSES)] != "queued"]
    per_run = steps // len(started)
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None)
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


def append_steps(path: Path, running: list[int], count: int) -> None:
    """What the workers write between two refreshes: ``count`` steps per running run."""
    import sqlite3

    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        cursor = connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        for run_id in running:
            (last,) = cursor.execute("SELECT max(step) FROM step_metrics WHERE run_id = ?",
                                     (run_id,)).fetchone()
            cursor.executemany(
                "INSERT INTO step_metrics (run_id, step, epoch, loss, loss_kind, data_ms, "
                "compute_ms, optimizer_ms) VALUES (?, ?, 9, 0.01, 0, 1.0, 20.0, 5.0)",
                [(run_id, last + k) for k in range(1, count + 1)])
        cursor.execute("COMMIT")
    finally:
        connection.close()


def running_runs(runs: int) -> list[int]:
    return [i for i in range(1, runs + 1) if STATUSES[(i - 1) % len(STATUSES)] == "running"]


# ----------------------------------------------------------------------------- one variant


class Timer:
    """Wall and thread-CPU seconds of calls, added to the current tick's part."""

    def __init__(self) -> None:
        self.ticks: list[dict[str, list[float]]] = []

    def new_tick(self) -> None:
        self.ticks.append({part: [0.0, 0.0] for part in PARTS})

    def wrap(self, part: str, function):
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                if self.ticks:
                    self.ticks[-1][part][0] += time.perf_counter() - wall
                    self.ticks[-1][part][1] += time.thread_time() - cpu
        return timed


async def drive(db_path: Path, home: Path, runs: int, ticks: int) -> dict:
    """Time ``ticks`` refreshes of the real app (after two that load everything)."""
    from textual.screen import Screen

    from diffbench.storage.db import open_database
    from diffbench.storage.workspace import Workspace
    from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions

    timer = Timer()
    Screen._on_timer_update = timer.wrap("paint", Screen._on_timer_update)  # before any screen
    db = open_database(f"sqlite:///{db_path}")
    app = DashboardApp(db, Workspace.resolve(home), DashboardOptions(refresh_s=3600))
    app.reader.refresh = timer.wrap("read", app.reader.refresh)
    app.series.update = timer.wrap("read", app.series.update)
    app._apply = timer.wrap("apply", app._apply)
    running = running_runs(runs)
    load = os.getloadavg()
    first = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        while app._reading or app.snapshot is None:
            await pilot.pause(0.01)
        first = time.perf_counter() - first
        for _ in range(ticks + 2):
            append_steps(db_path, running, 10)
            await pilot.pause()  # paint what is pending before the tick starts
            timer.new_tick()
            app.refresh_data()
            while app._reading:
                await pilot.pause(0.005)
            await pilot.pause()  # the frame that shows the tick
    db.dispose()
    return {"first_s": first, "load": [load, os.getloadavg()], "ticks": timer.ticks[2:]}


# ----------------------------------------------------------------------------- driver


def child(args: argparse.Namespace) -> None:
    result = asyncio.run(drive(Path(args.child), Path(args.child).parent, args.runs,
                               args.ticks))
    print(json.dumps(result))


def run_variant(python_path: str | None, db: Path, args: argparse.Namespace) -> dict:
    """One round of one variant in a fresh process, on a fresh copy of the database."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "bench.db"
        shutil.copy(db, copy)
        env = dict(os.environ)
        if python_path:
            env["PYTHONPATH"] = python_path
        out = subprocess.run([sys.executable, __file__, "--child", str(copy), "--runs",
                              str(args.runs), "--ticks", str(args.ticks)],
                             env=env, capture_output=True, text=True, cwd=folder)
        if out.returncode:
            sys.exit(f"benchmark child failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.splitlines()[-1])


def checkout(ref: str, folder: Path) -> str:
    """A PYTHONPATH entry with ``ref``'s dashboard code (tui/ and storage/reads.py) over
    the current engine and storage (one database schema for both variants)."""
    package = folder / "diffbench"
    for part in ("engine", "storage", "presets"):
        shutil.copytree(ROOT / part, package / part,
                        ignore=shutil.ignore_patterns("__pycache__"))
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "tui",
                              "storage/reads.py"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(package)], input=archive, check=True)
    return str(folder)


def medians(results: list[dict]) -> dict[str, tuple[float, float]]:
    """Per part and for the total: (median wall ms, median CPU ms) over all ticks."""
    ticks = [t for r in results for t in r["ticks"]]
    out = {part: (statistics.median(t[part][0] for t in ticks) * 1000,
                  statistics.median(t[part][1] for t in ticks) * 1000) for part in PARTS}
    out["total"] = (statistics.median(sum(t[p][0] for p in PARTS) for t in ticks) * 1000,
                    statistics.median(sum(t[p][1] for p in PARTS) for t in ticks) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="processes per variant")
    parser.add_argument("--ticks", type=int, default=10, help="timed refreshes per round")
    parser.add_argument("--baseline-ref", help="a git commit to time alternately with")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "bench.db"
        start = time.perf_counter()
        build(db, args.runs, args.steps)
        print(f"built {args.runs} runs, {args.steps:,} step rows in "
              f"{time.perf_counter() - start:.1f} s")
        variants = {"current": None}
        if args.baseline_ref:
            variants = {args.baseline_ref: checkout(args.baseline_ref,
                                                    Path(folder) / "baseline"), **variants}
        results: dict[str, list[dict]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, path in variants.items():
                results[name].append(run_variant(path, db, args))
        rows = 10 * len(running_runs(args.runs))
        print(f"median over {args.rounds} × {args.ticks} ticks (+{rows} step rows each), "
              "ms as wall / CPU of the thread:")
        print(f"{'':>12}" + "".join(f"{part:>16}" for part in (*PARTS, "total")) +
              "   first load   load average (1 min) at start–end")
        for name, rounds in results.items():
            m = medians(rounds)
            loads = ", ".join(f"{r['load'][0][0]:.1f}–{r['load'][1][0]:.1f}" for r in rounds)
            first = statistics.median(r["first_s"] for r in rounds)
            print(f"{name[:12]:>12}" + "".join(f"{m[p][0]:>9.1f} /{m[p][1]:>5.1f}"
                                               for p in (*PARTS, "total"))
                  + f"   {first:8.2f} s   {loads}")
        print("goal: total ≤ 100 ms")


if __name__ == "__main__":
    main()
