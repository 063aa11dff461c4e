"""How long one refresh of `diffbench tui` takes on a large job database.

Builds a synthetic SQLite database of 1,000 runs (100 running, 700 done, 100 queued, 50
failed, 50 diverged), 100 workers with their kept load samples (`workers.KEEP_LOAD` each,
GPU and host readings) and 1,000,000 step rows plus 10 epoch rows per started run, written
through the storage API the workers use (`storage.queue`, `storage.records`,
`storage.workers`), so that a schema change cannot leave the benchmark behind. Then it
drives the real app (headless, 160×48, every pane visible, the first run selected: a
running one, so its curves change every tick) through Textual's pilot. Before each tick
"workers" append 10 steps to each running run (1,000 new rows) and 5 workers heartbeat with
their load (100 workers at one beat per 20 s); a tick is what the app does on its timer,
timed in three parts, each as wall time and as CPU time of its thread (the CPU time does
not count waiting for a busy machine's cores):

* read: `DashboardReader.refresh()` + `SeriesCache.update()` on the read thread;
* apply: `DashboardApp._apply`, pushing the snapshot into the widgets (UI thread);
* paint: the screen update that follows (layout and rendering of the changed widgets).

Goal: median read + apply + paint ≤ 100 ms. With ``--baseline-ref REF`` (a git commit) the
same ticks also run against that commit's code, alternating with the current code round by
round, so both see the same machine load (only the dashboard's code, tui/ and
storage/reads.py, comes from REF); the medians are printed side by side.

    .venv/bin/python benchmarks/tui_refresh.py [--rounds 3 --ticks 10] [--baseline-ref REF]
    .venv/bin/python benchmarks/tui_refresh.py --runs 20 --steps 400 --rounds 1 --ticks 1
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from diffbench.storage.db import Database

OPTIMIZERS = ("adamw", "sgd", "muon", "soap", "schedulefree", "prodigy")
STATUSES = ["running"] * 100 + ["done"] * 700 + ["queued"] * 100 + ["failed"] * 50 \
    + ["diverged"] * 50
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)  # every time stamp the build writes
PARTS = ("read", "apply", "paint")
ROOT = Path(__file__).resolve().parents[1]


def build(path: Path, runs: int, steps: int) -> None:
    """The synthetic database: each started run claimed, started, given its step and epoch
    rows and (unless still running) finished by one of the workers, as a worker does (28 s
    for a million step rows on 2 cores; the raw SQL inserts this replaced took 2 s)."""
    from diffbench.engine.metrics import EpochRecord, StepRecord
    from diffbench.storage import queue, records, workers
    from diffbench.storage.db import open_database

    db = open_database(f"sqlite:///{path}")
    try:
        hosts = [workers.register_worker(db, host=f"node{w}", pid=1000 + w,
                                         device=f"cuda:{w % 8}", now=T0).id
                 for w in range(1, 101)]
        for k in range(workers.KEEP_LOAD):  # one transaction per round of heartbeats
            with db.session(write=True) as session:
                for worker in hosts:
                    workers.add_load(session, worker, load_sample(worker + k),
                                     now=T0 + dt.timedelta(seconds=20 * k))
        ids = queue.enqueue(db, [
            queue.RunSpec(preset="paper", optimizer=OPTIMIZERS[i % len(OPTIMIZERS)],
                          schedule="linear", lr=1e-3, weight_decay=0.0, seed=i, epochs=10)
            for i in range(1, runs + 1)], now=T0).ids
        rng = random.Random(0)
        statuses = {run_id: STATUSES[i % len(STATUSES)] for i, run_id in enumerate(ids)}
        started = [run_id for run_id in ids if statuses[run_id] != "queued"]
        per_run = steps // len(started)
        for run_id in started:
            worker = hosts[run_id % len(hosts)]
            queue.claim_next(db, worker, ids=[run_id], now=T0)
            queue.record_start(db, run_id, worker,
                               provenance={"device": "cuda:0", "device_name": "H100"})
            records.add_step_metrics(db, run_id, [
                StepRecord(step=s, epoch=s * 10 // per_run, loss=1.0 / s, lr=1e-3,
                           grad_norm=1.0, data_ms=1.0, compute_ms=20 + rng.random(),
                           optimizer_ms=5.0) for s in range(1, per_run + 1)])
            records.add_epoch_metrics(db, run_id, [
                EpochRecord(epoch=e, step=(e + 1) * per_run // 10, train_loss=1.0 / (e + 1),
                            valid_loss=1.1 / (e + 1), fixed_valid_loss=1.1 / (e + 1),
                            epoch_s=30.0, valid_s=1.0, sample_s=0.0, train_s=30.0 * (e + 1))
                for e in range(10)])
            if statuses[run_id] != "running":
                queue.finish(db, run_id, worker, statuses[run_id], now=T0)
    finally:
        db.dispose()


def load_sample(k: int):
    """A GPU worker's load, varying with ``k``."""
    from diffbench.storage.workers import LoadSample

    return LoadSample(gpu_util=float(k * 37 % 101), gpu_memory_used=(40 + k % 30) * 2**30,
                      gpu_memory_total=80 * 2**30, gpu_temp=50.0 + k % 30,
                      cpu_percent=float(k * 13 % 101), ram_used=100 * 2**30,
                      ram_total=512 * 2**30)


def append_steps(db: Database, count: int) -> None:
    """What the workers write between two refreshes: ``count`` steps per running run, and
    5 of the 100 workers' heartbeats with their load."""
    from diffbench.engine.metrics import StepRecord
    from diffbench.storage import queue, records, workers

    beating = [w.id for w in workers.list_workers(db)[:100]]
    for worker in random.sample(beating, min(5, len(beating))):
        queue.heartbeat(db, worker, load=load_sample(worker))
    for run in queue.list_runs(db, status="running"):
        records.add_step_metrics(db, run.id, [
            StepRecord(step=run.steps_done + k, epoch=9, loss=0.01, lr=1e-3, grad_norm=1.0,
                       data_ms=1.0, compute_ms=20.0, optimizer_ms=5.0)
            for k in range(1, count + 1)])


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


async def drive(db_path: Path, home: Path, ticks: int) -> dict:
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
    load = os.getloadavg()
    first = time.perf_counter()
    async with app.run_test(size=(160, 48)) as pilot:
        while app._reading or app.snapshot is None:
            await pilot.pause(0.01)
        first = time.perf_counter() - first
        for _ in range(ticks + 2):
            append_steps(db, 10)
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
    result = asyncio.run(drive(Path(args.child), Path(args.child).parent, args.ticks))
    print(json.dumps(result))


def run_variant(python_path: str | None, db: Path, args: argparse.Namespace) -> dict:
    """One round of one variant in a fresh process, on a fresh copy of the database."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "bench.db"
        shutil.copy(db, copy)
        env = dict(os.environ)
        if python_path:
            env["PYTHONPATH"] = python_path
        out = subprocess.run([sys.executable, __file__, "--child", str(copy), "--ticks",
                              str(args.ticks)],
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
