"""One run in the foreground, into a run folder and a live view: what `diffbench train` drives.

    open_run          data set → Trainer (resumed from the folder's last checkpoint when asked);
                      a new run's ``config.json``, which `saved_run` reads back for --resume
    train_in_folder   records → `engine.metrics.FolderSink` and `Display`, Ctrl-C → a checkpoint
    Display           the live view: a progress bar over steps, one line per epoch

A run folder holds::

    config.json                 the resolved run (preset, optimizer, lr, wd, schedule, …)
                                and its data set's path
    steps.jsonl  epochs.jsonl   metrics (engine.metrics.FolderSink)
    events.jsonl                start, checkpoints, final status
    samples/epoch-NNNN.npz      preview windows (velocity and picture vorticity)
    samples/quality.npz         states of the trajectories the quality phase scored, and
    samples/quality-data.npz    the same states of the test trajectories beside them
    quality.json                their sample-quality scores
    checkpoints/                resume checkpoints and latest.json
    model.pt                    final weights (ScheduleFree: its averaged weights)

Unlike the worker (worker.py) nothing here touches the database. Errors are the engine's
(`DatasetError`, `DeviceError`, `CheckpointError`) and `KeyboardInterrupt`; the command
turns them into messages and exit codes.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from diffbench.engine.run_config import RunConfig
    from diffbench.engine.training import Trainer

CONFIG = "config.json"


@dataclass(frozen=True)
class Outcome:
    """How a run ended: the trainer's last state (done, diverged, interrupted after a
    checkpoint, …; None if it yielded none) and its step out of the run's steps."""

    status: str | None
    step: int
    total_steps: int


def open_run(run: RunConfig, folder: Path, data_path: Path, *, resume: bool) -> Trainer:
    """Load the data set and build the trainer, then write a new run's ``config.json``:
    a folder holds a run only once its trainer could be built."""
    from diffbench.engine.run import TrainingData
    from diffbench.engine.training import Trainer

    trainer = Trainer(run, TrainingData.load(data_path, run.preset), folder, resume=resume)
    if not resume:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG).write_text(json.dumps(
            {"run": run.to_dict(), "data": str(data_path)}, indent=2) + "\n")
    return trainer


def saved_run(folder: Path) -> tuple[RunConfig, Path]:
    """The run and data set path `open_run` wrote into ``folder``; ValueError, KeyError or
    TypeError when ``config.json`` is not one it wrote."""
    from diffbench.engine.run_config import RunConfig

    saved = json.loads((folder / CONFIG).read_text())
    return RunConfig.from_dict(saved["run"]), Path(saved["data"])


def train_in_folder(trainer: Trainer, folder: Path, console: Console) -> Outcome:
    """Drain the trainer's records into ``folder`` and the live view until it ends.

    The first Ctrl-C asks the trainer to stop after this step, and it checkpoints (the
    outcome says "interrupted"); a second raises KeyboardInterrupt at once, leaving the
    last checkpoint. The previous SIGINT handler is restored either way.
    """
    from diffbench.engine.metrics import FolderSink

    sink = FolderSink(folder)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if stopping:
            raise KeyboardInterrupt
        stopping = True
        trainer.request_stop()

    previous = signal.signal(signal.SIGINT, stop)
    status = None
    try:
        with Display(console, trainer.config, folder) as display:
            for record in trainer:
                sink.write(record)
                display.update(record)
                status = getattr(record, "state", status)
    finally:
        signal.signal(signal.SIGINT, previous)
    return Outcome(status, trainer.step, trainer.total_steps)


class Display:
    """The live view on stderr: a progress bar over steps with the newest loss, lr and step
    time split, and one line per epoch above it."""

    def __init__(self, console: Console, run: RunConfig, folder: Path) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console, self.run, self.folder = console, run, folder
        self.bar = Progress(TextColumn("steps"), BarColumn(bar_width=16), MofNCompleteColumn(),
                            TextColumn("eta"), TimeRemainingColumn(),
                            TextColumn("{task.fields[now]}"), console=console)
        self.task: TaskID | None = None  # once the StartRecord says how many steps
        self.epochs = run.preset.train.epochs

    def __enter__(self) -> Display:
        run = self.run
        self.console.print(
            f"training {run.preset.name}: {run.optimizer}, {run.schedule}, lr {run.lr:g}, "
            f"wd {run.weight_decay:g}, seed {run.seed}, {run.precision} → {self.folder}",
            markup=False)
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def update(self, record: Any) -> None:
        """Show one trainer record (records without a line of their own are skipped)."""
        from diffbench.engine.metrics import EpochRecord, StartRecord, StatusRecord, Steps

        match record:
            case StartRecord():
                info = record.provenance
                self.console.print(
                    f"  {info['device']} ({info['device_name']}), {info['parameters']:,} "
                    f"parameters, {info['optimizer_implementation']}, {record.epoch_steps} "
                    f"steps/epoch" + (f"; resumed at step {record.step}" if record.step else ""),
                    markup=False)
                self.task = self.bar.add_task("train", total=record.total_steps,
                                              completed=record.step, now="")
            case Steps(records=steps):
                n = len(steps)
                data, compute, opt = (sum(getattr(s, k) for s in steps) / n
                                      for k in ("data_ms", "compute_ms", "optimizer_ms"))
                last = steps[-1]
                self.bar.update(self.task, completed=last.step,
                                now=f"loss {last.loss:.4g}  lr {last.lr:.3g}  ms/step "
                                f"{data:.1f}+{compute:.1f}+{opt:.1f}")
            case EpochRecord():
                valid = ("" if record.valid_loss is None else
                         f"  valid {record.valid_loss:.5f}  fixed {record.fixed_valid_loss:.5f}")
                self.console.print(f"epoch {record.epoch + 1}/{self.epochs}  train "
                                   f"{record.train_loss:.5f}{valid}  ({record.epoch_s:.2f} s)",
                                   markup=False)
            case StatusRecord(state="diverged"):
                self.console.print(f"diverged: {record.message}", markup=False)
