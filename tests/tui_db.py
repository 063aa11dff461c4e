"""Databases for the dashboard tests.

* `trained_workspace`: a workspace whose runs a real in-process `Worker` trained (a tiny
  preset, two short runs), plus a queued run; made once per session.
* `fixed_workspace`: a hand-made database with fixed timestamps and metric values, and a
  small data set file, for snapshot tests (the same pixels on every machine).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from diffbench.storage import queue, records, workers
from diffbench.storage.db import Database, open_database
from diffbench.storage.runs import RunSpec
from diffbench.storage.workspace import Workspace

NOW = dt.datetime(2026, 1, 2, 12, 0, 0, tzinfo=dt.UTC)
BRAILLE = frozenset(chr(c) for c in range(0x2801, 0x2900))  # plotext's curve characters
LOCATION = "sqlite:///~/diffbench/diffbench.db"


@dataclass(frozen=True)
class TrainedWorkspace:
    home: Path
    url: str
    done: tuple[int, ...]  # trained by the worker (adamw, muon)
    queued: int


_TRAINED: dict[Path, TrainedWorkspace] = {}


def trained_workspace(root: Path) -> TrainedWorkspace:
    """Train two tiny runs with the real worker under ``root`` (once per ``root``)."""
    if root in _TRAINED:
        return _TRAINED[root]
    from diffbench.engine.config import load_preset, override
    from diffbench.tui.runner.worker import Worker
    from tests.helpers import preset_toml

    home = root / "home"
    preset = override(load_preset("tiny"), {
        "data.size": 32, "data.trajectories": 10, "data.transitions": 8, "data.burn_in": 3,
        "data.chunk": 5, "model.channels": [8, 16], "train.batch_size": 4,
        "train.epochs": 2, "train.samples_every": 1, "train.sample_steps": 2,
        "train.sample_count": 1})
    root.mkdir(parents=True, exist_ok=True)
    toml = root / "tuiquick.toml"
    toml.write_text(preset_toml(preset))
    url = f"sqlite:///{home / 'diffbench.db'}"
    db = open_database(url)
    try:
        specs = [RunSpec(preset=str(toml), optimizer=name, schedule="linear", lr=1e-3,
                         weight_decay=0.0, seed=0, epochs=2) for name in ("adamw", "muon")]
        done = queue.enqueue(db, specs).ids
        Worker(db, Workspace.resolve(home), device="cpu", lease_s=30.0).serve(
            max_runs=len(done))
        queued = queue.enqueue(db, [RunSpec(preset=str(toml), optimizer="soap",
                                            schedule="cosine", lr=1e-3, weight_decay=0.0,
                                            seed=1, epochs=2)]).ids[0]
    finally:
        db.dispose()
    _TRAINED[root] = TrainedWorkspace(home=home, url=url, done=tuple(done), queued=queued)
    return _TRAINED[root]


# ----------------------------------------------------------------------------- fixed DB


def _at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def _field(size: int, phase: float) -> np.ndarray:
    """A smooth periodic vorticity-like field in about [−1.2, 1.2]."""
    x = np.linspace(0, 2 * np.pi, size, endpoint=False)
    return (np.sin(4 * x[:, None] + phase) * np.cos(x[None, :] - phase)
            + 0.3 * np.sin(x[None, :] * 3)).astype(np.float32)


def _train(db: Database, run_id: int, *, steps: int, epochs: int, scale: float,
           opt_ms: float) -> None:
    per_epoch = steps // epochs
    records.add_step_metrics(db, run_id, [
        {"step": s, "epoch": (s - 1) // per_epoch, "loss": scale * (0.05 + 1.0 / (1 + s / 8)),
         "lr": 1e-3, "grad_norm": 1.0, "data_ms": 1.0, "compute_ms": 20.0 + (s % 3),
         "optimizer_ms": opt_ms} for s in range(1, steps + 1)])
    records.add_epoch_metrics(db, run_id, [
        {"epoch": e, "step": (e + 1) * per_epoch,
         "train_loss": scale * (0.06 + 1.0 / (1 + (e + 1) * per_epoch / 8)),
         "valid_loss": scale * (0.07 + 1.0 / (1 + (e + 1) * per_epoch / 8)),
         "fixed_valid_loss": scale * (0.07 + 1.0 / (1 + (e + 1) * per_epoch / 8)),
         "epoch_s": 2.0, "valid_s": 0.2, "sample_s": 0.1,
         "train_s": (e + 1) * per_epoch * (21.0 + opt_ms) / 1000} for e in range(epochs)])


def fixed_workspace(root: Path) -> tuple[Path, str]:
    """A workspace with six runs in every state, two workers (one dead) and a data set
    file; every time and value fixed. Returns (home, database URL)."""
    home = root / "fixed-home"
    url = f"sqlite:///{home / 'diffbench.db'}"
    db = open_database(url)
    try:
        _fill(db)
    finally:
        db.dispose()
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    with h5py.File(data / "tiny.h5", "w") as file:  # only what the preview reads
        u = np.stack([_field(16, 0.4 * t) for t in range(5)])
        file["valid"] = np.stack([u, u.transpose(0, 2, 1)], axis=1)[None]  # (1, 5, 2, H, W)
    return home, url


def _fill(db: Database) -> None:
    specs = [RunSpec(preset="tiny", optimizer=o, schedule=s, lr=lr, weight_decay=wd, seed=seed,
                     epochs=4)
             for o, s, lr, wd, seed in (("adamw", "linear", 1e-3, 0.01, 0),
                                        ("adamw", "linear", 1e-3, 0.01, 1),
                                        ("muon", "linear", 2e-2, 0.0, 0),
                                        ("soap", "cosine", 3e-3, 0.01, 0),
                                        ("sgd", "linear", 10.0, 0.0, 0),
                                        ("prodigy", "wsd", 1.0, 0.0, 0))]
    ids = queue.enqueue(db, specs, now=_at(-3600)).ids
    alive = workers.register_worker(db, host="gpu-box", pid=101, device="cuda:0", now=_at(-600))
    dead = workers.register_worker(db, host="gpu-box", pid=102, device="cuda:1", now=_at(-900))
    queue.heartbeat(db, dead.id, now=_at(-400))
    plan = [(ids[0], alive.id, 1.0, 6.0, "done"), (ids[1], alive.id, 1.05, 6.0, "done"),
            (ids[2], alive.id, 0.8, 9.0, "done"), (ids[3], alive.id, 0.9, 15.0, None),
            (ids[4], dead.id, math.nan, 4.0, "diverged")]
    for run_id, worker, scale, opt_ms, final in plan:
        run = queue.claim_next(db, worker, lease_s=3600, now=_at(-300))
        assert run is not None and run.id == run_id
        queue.record_start(db, run_id, worker, provenance={"device": "cuda:0",
                                                           "device_name": "H100"})
        if final == "diverged":
            records.add_step_metrics(db, run_id, [
                {"step": 1, "epoch": 0, "loss": 5.0, "lr": 10.0, "grad_norm": 1e3,
                 "data_ms": 1.0, "compute_ms": 20.0, "optimizer_ms": opt_ms},
                {"step": 2, "epoch": 0, "loss": math.nan, "lr": 10.0, "grad_norm": math.nan,
                 "data_ms": 1.0, "compute_ms": 20.0, "optimizer_ms": opt_ms}])
            queue.finish(db, run_id, worker, "diverged", error="loss is non-finite",
                         now=_at(-200))
            continue
        steps = 64 if final else 40
        _train(db, run_id, steps=steps, epochs=4 if final else 2, scale=scale, opt_ms=opt_ms)
        sample = np.stack([_field(16, 0.4 * t + scale) for t in range(5)])[None]
        records.add_sample(db, run_id, epoch=1, step=steps, array=sample)
        if final:
            queue.finish(db, run_id, worker, final, now=_at(-100))
    queue.heartbeat(db, alive.id, ids[3], lease_s=3600, now=_at(-5))


# ----------------------------------------------------------------------------- pilot


async def settle(pilot, timeout: float = 60.0) -> None:
    """Wait until the app's actions are written and its reads (and the follow-up read they
    may start) are applied and painted: polls the condition, however slow the machine."""
    import time

    app = pilot.app
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await app.workers.wait_for_complete()
        await pilot.pause()
        if not app._reading and not app.workers:
            await pilot.pause()  # the frame that shows the last apply
            return
        await pilot.pause(0.01)
    raise AssertionError(f"the dashboard kept reading for {timeout} s")


def screen_text(app) -> str:
    """What the terminal shows, as plain text (one line per row)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def region_text(app, selector: str) -> str:
    """What the terminal shows inside one widget's region."""
    region = app.query_one(selector).region
    lines = screen_text(app).splitlines()[region.y:region.bottom]
    return "\n".join(line[region.x:region.right] for line in lines)


def sync(test):
    """Run an ``async def`` test with `asyncio.run` (no asyncio plugin needed)."""
    import asyncio
    import functools

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return wrapper
