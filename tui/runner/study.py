"""A study trained on this machine in the foreground (`diffbench demo`): its runs queued
once (runs queued, running, done or diverged before are reused), one `Worker` in this
process and helper `diffbench worker --run …` processes beside it, and a live display on
stderr that polls the job database as the dashboard does."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import EXIT_INTERRUPTED
from .gpus import worker_command
from .worker import Worker

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from diffbench.storage.db import Database
    from diffbench.storage.runs import RunSpec
    from diffbench.storage.workspace import Workspace


def helper_workers(workspace: Workspace, db_url: str | None, ids: Sequence[int], device: str,
                   threads: int, count: int) -> list[subprocess.Popen]:
    """``count`` `diffbench worker` processes that claim only runs ``ids`` and exit when none
    is left. They share this terminal's process group, so Ctrl-C reaches them too: each
    checkpoints its run and puts it back in the queue."""
    args = worker_command(workspace, db_url, "--device", device,
                          "--threads", str(threads), "--idle-exit", "0",
                          *(f"--run={run_id}" for run_id in ids))
    return [subprocess.Popen(args, stdout=subprocess.DEVNULL) for _ in range(count)]


def _interrupt(helpers: Sequence[subprocess.Popen]) -> None:
    for helper in helpers:
        if helper.poll() is None:
            helper.send_signal(signal.SIGINT)


def train_here(db: Database, workspace: Workspace, ids: Sequence[int], device: str,
               err: Console, helpers: Sequence[subprocess.Popen] = ()) -> int:
    """Train the study's unfinished runs in this process, ``helpers`` training beside it, with
    the live display; the worst exit code."""
    started = time.monotonic()
    with StudyDisplay(db, ids, err):
        try:
            code = Worker(db, workspace, device=device, runs=ids).serve(idle_exit=0)
            if code == EXIT_INTERRUPTED:  # a signal this process alone got: pass it on
                _interrupt(helpers)
            codes = [helper.wait() for helper in helpers]
        except KeyboardInterrupt:  # while waiting for the helpers, this worker done
            _interrupt(helpers)
            for helper in helpers:
                helper.wait()
            raise
    code = max([code, *codes], key=lambda c: (c != 0, abs(c)))
    left = unfinished(db, ids)
    err.print(f"demo: {len(ids) - len(left)} of {len(ids)} runs finished; training took "
              f"{_clock(time.monotonic() - started)}", markup=False)
    return code


def queue_study(db: Database, specs: Sequence[RunSpec]) -> tuple[list[int], int]:
    """Queue the specs; the demo's run ids and how many existed already. `enqueue` skips
    runs queued, running or done; diverged ones are final results too, so they are reused
    rather than queued again."""
    from diffbench.storage.queue import enqueue, list_runs

    diverged = {r.identity: r.id for r in list_runs(db, status="diverged")}
    queued = enqueue(db, [s for s in specs if s.identity not in diverged])
    reused = {*(run_id for _, run_id in queued.skipped),
              *(diverged[s.identity] for s in specs if s.identity in diverged)}
    return sorted({*queued.ids, *reused}), len(reused)


def unfinished(db: Database, ids: Sequence[int]) -> list[int]:
    from diffbench.storage import states
    from diffbench.storage.queue import list_runs

    return [r.id for r in list_runs(db, ids=ids) if r.status not in states.FINAL]


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}:{seconds:02d}"


# ----------------------------------------------------------------------------- display


@dataclass
class RunLine:
    """What the display knows of one run, from the job database."""

    label: str
    epochs: int
    status: str = "queued"
    finished: bool = False  # done, diverged, failed or cancelled
    epoch: int = 0  # epochs completed
    loss: float | None = None  # newest step's training loss
    ms: float | None = None  # newest steps' mean time (data + compute + optimizer)
    final: float | None = None  # final fixed-noise validation loss
    cursor: Any = None
    task: Any = field(default=None, repr=False)


class StudyDisplay:
    """The live display on stderr. A thread polls the database every ``every`` seconds
    (step metrics come in batches, at least every 2 s) and redraws; the worker's own log
    lines scroll above it. The ETA is the remaining epochs at this session's pace so far
    (data loading, previews and the sample-quality assessment included)."""

    def __init__(self, db: Database, ids: Sequence[int], console: Console,
                 every: float = 0.5) -> None:
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bars

        from diffbench.storage.queue import list_runs

        self.db, self.ids, self.console, self.every = db, list(ids), console, every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._poll, name="study-display", daemon=True)
        self.runs = {r.id: RunLine(f"#{r.id} {r.optimizer} {r.schedule} lr {r.lr:g}",
                                   r.epochs or 1) for r in list_runs(db, ids=self.ids)}
        self.lines = Bars(TextColumn("{task.description}"), BarColumn(bar_width=20),
                          TextColumn("{task.fields[info]}"), console=console)
        for line in self.runs.values():
            line.task = self.lines.add_task(line.label, total=line.epochs, info="queued")
        self.epochs = sum(line.epochs for line in self.runs.values())
        self.total = Bars(TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                          TextColumn("{task.fields[info]} · elapsed"), TimeElapsedColumn(),
                          TextColumn("· eta {task.fields[eta]}"), console=console)
        self.overall = self.total.add_task("demo", total=self.epochs, info="", eta="…")
        self.start: tuple[float, int] | None = None  # (time, epochs done) when shown first
        self.live: Any = None

    def __enter__(self) -> StudyDisplay:
        from rich.live import Live

        self._refresh()
        self.live = Live(self._renderable(), console=self.console, refresh_per_second=4,
                         transient=False)
        self.live.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()
        self._refresh()
        self.live.update(self._renderable(), refresh=True)
        self.live.stop()
        if not self.console.is_terminal:  # Live ends a terminal's last line, not a pipe's
            self.console.line()

    def _poll(self) -> None:
        from diffbench.storage.db import StorageError

        while not self.stopped.wait(self.every):
            try:
                self._refresh()
            except StorageError:  # a busy database: the next poll catches up
                continue
            self.live.update(self._renderable())

    def _renderable(self) -> RenderableType:
        from rich.console import Group

        return Group(self.lines, self.total)

    def _refresh(self) -> None:
        """Read the runs' states and their newest metrics; update the bars."""
        from diffbench.storage import states
        from diffbench.storage.queue import list_runs
        from diffbench.storage.records import metrics_since

        for run in list_runs(self.db, ids=self.ids):
            line = self.runs[run.id]
            line.status, line.finished = run.status.value, run.status in states.FINAL
            if line.status != "queued" or line.cursor is not None:
                batch = metrics_since(self.db, run.id, line.cursor)
                line.cursor = batch.cursor
                if batch.epochs:
                    line.epoch = batch.epochs[-1].epoch + 1
                if batch.steps:
                    newest = batch.steps[-16:]
                    line.loss = newest[-1].loss
                    line.ms = sum(s.data_ms + s.compute_ms + s.optimizer_ms
                                  for s in newest) / len(newest)
            if line.finished and run.summary:
                line.final = run.summary.get("final_fixed_valid_loss")
            self.lines.update(line.task, completed=line.epoch, info=_info(line))
        lines = self.runs.values()
        done = sum(line.finished for line in lines)
        epochs = sum(line.epochs if line.finished else line.epoch for line in lines)
        now = time.monotonic()
        self.start = self.start or (now, epochs)
        since, before = self.start
        eta = "…" if epochs == before else \
            _clock((now - since) / (epochs - before) * (self.epochs - epochs))
        self.total.update(self.overall, completed=epochs, eta=eta,
                          description=f"demo {done}/{len(self.runs)} runs",
                          info=f"epochs {epochs}/{self.epochs}")


def _info(line: RunLine) -> str:
    parts = [f"epoch {line.epoch}/{line.epochs}"]
    if line.status == "running" and line.loss is not None:
        parts.append(f"loss {line.loss:.4f}")
    if line.status == "running" and line.ms is not None:
        parts.append(f"{line.ms:.0f} ms/step")
    if line.status != "running":
        parts.append(line.status)
    if line.final is not None:
        parts.append(f"valid {line.final:.4f}")
    return "  ".join(parts)
