"""Chaos: K `diffbench worker` processes drain M tiny runs while random SIGKILL, SIGTERM and
SIGSTOP/SIGCONT hit them, in every phase (data generation, training, checkpoint writes, the
quality phase); then the same runs drain again without faults, as the reference.

Checks, printed with the figures (exit 1 when one fails):
  every run done exactly once · no step or epoch row missing or doubled · every run that was
  interrupted ends with parameters bit-identical to its uninterrupted reference (CPU) ·
  "database is locked" never reached a log · the time lost to faults (chaos drain wall
  time over the reference drain's).

A stopped worker is resumed after a random pause, sometimes longer than its lease, so the
run goes to another worker while the paused one still believes it holds it (a "zombie").
A killed worker is replaced, so K keep draining.

    python benchmarks/chaos.py                       # ≥ 50 events, SQLite (minutes)
    python benchmarks/chaos.py --events 8 --runs 4 --workers 3     # the test suite's size
    python benchmarks/chaos.py --db postgresql://user@host/db      # a server you give
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from diffbench.storage import queue, workers
from diffbench.storage.db import Database, open_database
from diffbench.storage.schema import EpochMetricRow, StepMetricRow
from diffbench.tui.study.plan import Grid, resolve_specs

#: A run of seconds on one CPU thread: tiny's recipe shrunk, a toy U-Net, a checkpoint
#: every epoch, previews and the quality phase on (so faults can land in each phase; its
#: 128 sampler steps make it long enough to be hit).
QUICK = {"data.size": 32, "data.trajectories": 10, "data.transitions": 8, "data.burn_in": 3,
         "data.chunk": 2, "model.channels": [8, 16], "train.batch_size": 4,
         "train.samples_every": 2, "train.sample_steps": 4, "train.sample_count": 2,
         "train.checkpoint_every": 1, "quality.steps": 128}
FAULTS = ("SIGKILL", "SIGTERM", "SIGSTOP")
LOCKED = "database is locked"


@dataclass
class Fleet:
    """K workers on one database, replaced as they exit, with their logs."""

    home: Path
    url: str
    size: int
    lease: float
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    log_of: dict[int, str] = field(default_factory=dict)  # pid → its log file
    folder: Path = field(init=False)

    def __post_init__(self) -> None:
        self.folder = self.home / "chaos-logs"
        self.folder.mkdir(parents=True, exist_ok=True)

    def spawn(self) -> subprocess.Popen:
        log = self.folder / f"worker-{len(self.logs)}.log"
        self.logs.append(str(log))
        env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(
            [sys.executable, "-c", "from diffbench.tui.cli import main; main()",
             "--home", str(self.home), "worker", "--db", self.url, "--device", "cpu",
             "--threads", "1", "--lease", str(self.lease), "--idle-exit", "3",
             "--max-attempts", "1000"],
            stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)  # noqa: SIM115
        self.processes.append(process)
        self.log_of[process.pid] = str(log)
        return process

    def live(self) -> list[subprocess.Popen]:
        return [p for p in self.processes if p.poll() is None]

    def top_up(self) -> None:
        for _ in range(self.size - len(self.live())):
            self.spawn()

    def stop(self) -> None:
        for process in self.live():
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait()

    def text(self) -> str:
        return "\n".join(Path(log).read_text(errors="replace") for log in self.logs)


def queue_runs(db: Database, count: int, epochs: int) -> list[int]:
    """``count`` runs of the quick recipe: optimizers and seeds varied, so resumes cross
    every optimizer's state."""
    grid = Grid(preset="tiny", optimizers=["adamw", "muon", "soap", "sgd"], schedules=["linear"],
                lrs=[], wds=[], seeds=list(range((count + 3) // 4)), epochs=epochs,
                sets=QUICK, priority=0, tags=("chaos",))
    return list(queue.enqueue(db, resolve_specs(grid)[:count]).ids)


def unfinished(db: Database) -> int:
    return sum(n for status, n in queue.count_by_status(db).items()
               if status.value in ("queued", "running"))


def phases(db: Database, fleet: Fleet) -> dict[int, str]:
    """What each live worker process is doing, by pid: data generation (its log's last
    line), the quality phase (its run has all its epochs), training (checkpoint writes at
    every epoch end included) or idle."""
    by_worker = {w.id: w.pid for w in workers.list_workers(db)}
    running = {by_worker.get(r.worker_id): r for r in queue.list_runs(db, status="running")}
    with db.session() as session:
        epochs = {run_id: n for run_id, n in session.execute(
            sa.select(EpochMetricRow.run_id, sa.func.count()).group_by(EpochMetricRow.run_id))}
    generating = any((fleet.home / "data").glob("*.partial"))
    out = {}
    for process in fleet.live():
        lines = Path(fleet.log_of[process.pid]).read_text(errors="replace").splitlines()
        run = running.get(process.pid)
        if lines and "generating" in lines[-1] and generating:
            out[process.pid] = "data generation"
        elif run is None:
            out[process.pid] = "idle"
        elif epochs.get(run.id, 0) >= (run.epochs or 0):
            out[process.pid] = "quality phase"
        else:
            out[process.pid] = "training"
    return out


def drain(db: Database, fleet: Fleet, *, events: int, every: float, rng: random.Random,
          timeout: float) -> tuple[float, Counter, Counter]:
    """Drain the queue with ``fleet``, hitting a worker about every ``every`` seconds until
    ``events`` faults were dealt, to workers with a run (half the time one generating data
    or in the quality phase when there is one); the wall time, the faults by kind and by
    phase."""
    kinds: Counter = Counter()
    hit: Counter = Counter()
    paused: dict[int, float] = {}  # pid → when to resume it
    start = time.monotonic()
    next_fault = start + rng.uniform(0.5, 1.5) * every
    fleet.top_up()
    while unfinished(db):
        now = time.monotonic()
        if now - start > timeout:
            raise TimeoutError(f"the queue did not drain in {timeout:.0f} s")
        for process in fleet.live():
            if paused.get(process.pid, float("inf")) <= now:
                process.send_signal(signal.SIGCONT)
                del paused[process.pid]
        fleet.top_up()
        if sum(kinds.values()) < events and now >= next_fault:
            doing = {pid: phase for pid, phase in phases(db, fleet).items()
                     if pid not in paused}
            rare = [pid for pid, phase in doing.items()
                    if phase in ("data generation", "quality phase")]
            busy = [pid for pid, phase in doing.items() if phase != "idle"]
            pool = rare if rare and rng.random() < 0.5 else busy  # idle: wait a tick
            if pool:
                pid = rng.choice(pool)
                fault = rng.choice(FAULTS)
                try:
                    os.kill(pid, getattr(signal, fault))
                except ProcessLookupError:  # it exited since: try another next tick
                    continue
                kinds[fault] += 1
                hit[doing[pid]] += 1
                if fault == "SIGSTOP":  # sometimes past the lease: a zombie on SIGCONT
                    paused[pid] = now + rng.uniform(0.5, 2.5 * fleet.lease)
                next_fault = now + rng.uniform(0.5, 1.5) * every
        time.sleep(0.2)
    for process in fleet.live():
        process.send_signal(signal.SIGCONT)
    for process in fleet.processes:
        process.wait(timeout=120)
    return time.monotonic() - start, kinds, hit


def parameters(home: Path, run_id: int) -> str:
    """sha256 of the run's final weights (tensors in key order)."""
    import torch

    state = torch.load(home / "runs" / str(run_id) / "model.pt", weights_only=True)
    digest = hashlib.sha256()
    for key in sorted(state):
        digest.update(key.encode())
        digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def audit(db: Database) -> dict[str, list[str]]:
    """Problems of a drained database, by check."""
    problems: dict[str, list[str]] = {"done once": [], "rows": []}
    runs = queue.list_runs(db)
    for run in runs:
        if run.status.value != "done":
            problems["done once"].append(f"run {run.id} ended {run.status.value}: {run.error}")
    with db.session() as session:
        for run in runs:
            steps = session.scalars(sa.select(StepMetricRow.step)
                                    .where(StepMetricRow.run_id == run.id)).all()
            epochs = session.scalars(sa.select(EpochMetricRow.epoch)
                                     .where(EpochMetricRow.run_id == run.id)).all()
            if sorted(steps) != list(range(1, run.steps_done + 1)):
                doubled = sum(n - 1 for n in Counter(steps).values())
                problems["rows"].append(f"run {run.id}: {len(steps)} step rows for "
                                        f"{run.steps_done} steps ({doubled} doubled)")
            if sorted(epochs) != list(range(len(set(epochs)))) or len(epochs) != len(set(epochs)):
                problems["rows"].append(f"run {run.id}: epoch rows {sorted(epochs)}")
    return problems


def study(home: Path, url: str, args: argparse.Namespace, *, events: int, every: float,
          rng: random.Random) -> tuple[Database, Fleet, float, Counter, Counter]:
    """Queue the runs in ``home``'s database and drain them with K workers and ``events``
    faults; the database (open), the fleet, the wall time, the faults by kind and phase."""
    db = open_database(url, home=home)
    queue_runs(db, args.runs, args.epochs)
    fleet = Fleet(home, url, args.workers, args.lease)
    try:
        wall, kinds, phases_hit = drain(db, fleet, events=events, every=every, rng=rng,
                                        timeout=args.timeout)
    finally:
        fleet.stop()
    return db, fleet, wall, kinds, phases_hit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=60, help="faults to deal (≥ 50: the "
                        "issue's bar)")
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lease", type=float, default=4.0, help="seconds (short: lost "
                        "workers are noticed fast)")
    parser.add_argument("--db", help="a PostgreSQL URL (an empty database) for the chaos "
                        "drain; default SQLite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--keep", action="store_true", help="keep the workspace")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="diffbench-chaos-"))
    rng = random.Random(args.seed)
    homes = {"reference": root / "reference", "chaos": root / "chaos"}
    db, _, reference_wall, _, _ = study(homes["reference"],
                                        f"sqlite:///{homes['reference'] / 'diffbench.db'}",
                                        args, events=0, every=1.0, rng=rng)
    reference = {r.identity: r.id for r in queue.list_runs(db)}
    db.dispose()
    every = 0.8 * reference_wall / max(args.events, 1)  # spread over the drain
    url = args.db or f"sqlite:///{homes['chaos'] / 'diffbench.db'}"
    db, fleet, wall, kinds, hit = study(homes["chaos"], url, args, events=args.events,
                                        every=every, rng=rng)
    try:
        problems = audit(db)
        runs = queue.list_runs(db)
    finally:
        db.dispose()
    problems["no locked database"] = [LOCKED] if LOCKED in fleet.text().lower() else []
    resumed = {r.identity: r.id for r in runs if r.attempts > 1}
    identical = [parameters(homes["chaos"], run_id)
                 == parameters(homes["reference"], reference[identity])
                 for identity, run_id in resumed.items()]
    problems["resumed runs bit-identical"] = (
        [f"{identical.count(False)} of {len(identical)} differ"] if not all(identical) else [])
    problems["faults dealt"] = ([f"{sum(kinds.values())} of {args.events} (the queue "
                                 "drained first)"] if sum(kinds.values()) < args.events else [])
    figures = [
        f"faults dealt: {sum(kinds.values())} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + "); by phase: "
        + ", ".join(f"{k} {v}" for k, v in sorted(hit.items())),
        f"workers started {len(fleet.logs)}; runs {len(runs)}, resumed {len(resumed)}, "
        f"attempts {sum(r.attempts for r in runs)}",
        f"resumed runs bit-identical to their reference: {identical.count(True)}/"
        f"{len(identical)}",
        f"drain wall time: chaos {wall:.0f} s, reference {reference_wall:.0f} s; lost to "
        f"faults {wall - reference_wall:.0f} s ({wall / reference_wall:.2f}×)",
        *(f"{'ok  ' if not found else 'FAIL'} {check}"
          + ("" if not found else ": " + "; ".join(found[:5]))
          for check, found in problems.items()),
    ]
    failed = any(problems.values())
    print("\n".join(figures))
    if args.keep or failed:
        print(f"workspace: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
