"""Metric logging's cost per step, as a fraction of a `tiny` training step (goal: ≤ 1 %).

One run, as a worker makes it: `Trainer` (CPU by default, the worker's ``flush_every``)
trains the `tiny` preset's U-Net on random windows of the preset's shape (the data's values
do not change the time of a step; no data set needs generating) and every record it yields
goes to a `StorageSink` (the worker's batching: 512 rows or 2 s) on a real SQLite database
in a temporary folder, holding a claimed run. Each ``sink.write`` call is timed with
``perf_counter``, so the logging time includes the sink's buffering, its batched step
``INSERT``s, and the epoch, sample and status rows; the trainer's own time is not in it.

Printed: the median step time (the trainer's data + forward/backward + optimizer phases, over
epochs 2…, the first being a warm-up; and their mean) and the wall time per step (the
trainer's training clock over epochs 2…),
the sink's time per step (total sink time / steps) with its parts, and their ratio.

    python benchmarks/logging_overhead.py                    # tiny, 4 epochs × 50 steps
    python benchmarks/logging_overhead.py --steps 100 --optimizer muon
    python benchmarks/logging_overhead.py --set train.batch_size=4   # a shrunk tiny
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from diffbench.engine.config import load_preset, override
from diffbench.engine.metrics import EpochRecord, Steps
from diffbench.engine.run import TrainingData
from diffbench.engine.run_config import RunConfig
from diffbench.engine.training import Trainer
from diffbench.storage import queue, records, workers
from diffbench.storage.db import open_database
from diffbench.tui.runner.sink import StorageSink
from diffbench.tui.study.plan import parse_sets


def synthetic(batch: int, window: int, n: int, steps_per_epoch: int) -> TrainingData:
    """Random trajectories: as many as fill ``steps_per_epoch`` full batches, window long."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(batch * steps_per_epoch, window, 2, n, n, generator=generator)
    return TrainingData(train=train, valid=train[:2].clone())


def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    changes = {"train.epochs": args.epochs, **parse_sets(args.set)}
    preset = override(load_preset(args.preset), changes)
    defaults = preset.optimizers[args.optimizer]
    config = RunConfig(preset=preset, optimizer=args.optimizer, lr=defaults.lr,
                       weight_decay=defaults.weight_decay, device=args.device)
    data = synthetic(preset.train.batch_size, preset.model.window, preset.data.resolution,
                     args.steps)

    db = open_database(f"sqlite:///{folder / 'jobs.db'}")
    try:
        queue.enqueue(db, [queue.RunSpec(
            preset=args.preset, optimizer=args.optimizer, schedule="linear", lr=defaults.lr,
            weight_decay=defaults.weight_decay, seed=0, epochs=args.epochs)])
        worker = workers.register_worker(db, host="bench", pid=os.getpid(), device=args.device)
        run = queue.claim_next(db, worker.id)
        sink = StorageSink(db, run.id, worker_id=worker.id,  # the worker's defaults,
                           active=lambda: True)                # fenced writes included

        trainer = Trainer(config, data)  # the worker's flush_every
        spent: dict[str, float] = defaultdict(float)  # sink seconds per record kind
        flushes = rows = 0
        steps, epoch_s, n_steps = [], [], 0
        for record in trainer:
            pending = len(sink.pending)
            started = time.perf_counter()
            sink.write(record)
            spent[type(record).__name__] += time.perf_counter() - started
            if isinstance(record, Steps):
                n_steps += len(record.records)
                steps += [s for s in record.records if s.epoch > 0]
                if len(sink.pending) < pending + len(record.records):
                    flushes, rows = flushes + 1, rows + pending + len(record.records)
            elif isinstance(record, EpochRecord) and record.epoch > 0:
                epoch_s.append(record.epoch_s)
            elif getattr(record, "state", "done") != "done":
                raise RuntimeError(f"run ended {record}")
        stored = records.metrics_since(db, run.id)
    finally:
        db.dispose()
    assert len(stored.steps) == n_steps, (len(stored.steps), n_steps)  # all written
    return {"preset": preset, "steps": steps, "n_steps": n_steps, "spent": spent,
            "flushes": flushes, "rows": rows, "epochs": len(stored.epochs),
            "epoch_s": epoch_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--optimizer", default="adamw")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=4, help="the first is a warm-up")
    parser.add_argument("--steps", type=int, default=50, help="steps per epoch")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a preset key (repeatable), e.g. to shrink tiny")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        m = measure(args, Path(tmp))
    preset, steps = m["preset"], m["steps"]
    step_ms = statistics.median(s.data_ms + s.compute_ms + s.optimizer_ms for s in steps)
    mean_ms = statistics.fmean(s.data_ms + s.compute_ms + s.optimizer_ms for s in steps)
    wall_ms = 1e3 * sum(m["epoch_s"]) / len(steps)  # the training clock, epochs 2…
    spent = m["spent"]
    sink_ms = 1e3 * sum(spent.values()) / m["n_steps"]
    steps_ms = 1e3 * spent.get("Steps", 0.0) / m["n_steps"]

    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device "
          f"{args.device}; {args.preset} ({preset.model.channels} × {preset.model.blocks} "
          f"blocks, {preset.data.resolution}², batch {preset.train.batch_size}"
          + (f"; overrides {', '.join(args.set)}" if args.set else "") + f"), {args.optimizer}, "
          f"{args.epochs} epochs × {args.steps} steps; SQLite, StorageSink defaults "
          f"(512 rows or 2 s per INSERT)")
    print(f"step (median of {len(steps)}, epochs 2…):   {step_ms:9.3f} ms   "
          f"[mean {mean_ms:.3f} ms; wall per step, epochs 2…: {wall_ms:.3f} ms]")
    print(f"sink per step (all records):      {sink_ms:9.4f} ms   "
          f"[step records incl. {m['flushes']} batched INSERTs of {m['rows']} rows: "
          f"{steps_ms:.4f} ms; epoch/sample/status rows: {sink_ms - steps_ms:.4f} ms]")
    print("  sink seconds by record: " + ", ".join(f"{k} {v:.4f}" for k, v in
                                                  sorted(spent.items())))
    ratio = sink_ms / step_ms
    print(f"logging / step: {ratio:.3%}  (/ wall step: {sink_ms / wall_ms:.3%}); "
          f"goal ≤ 1 %: {'met' if ratio <= 0.01 else 'NOT met'}")


if __name__ == "__main__":
    main()
