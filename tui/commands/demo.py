"""`diffbench demo`: the whole study in one command, sized for a laptop (2 CPU cores).

    data set     generated once if missing (the worker's file lock, a progress bar)
    queue        the `demo` sweep (presets/sweeps/demo.toml), tagged ``demo``; a run already
                 queued, running or done is not queued again, so a re-run reuses it
    workers      `runner.worker.Worker` in this process and ``--workers`` − 1 `diffbench worker
                 --run …` processes beside it, claiming only the demo's runs
    display      a poller thread reads the job database (as the dashboard does) and draws
                 one line per run and the overall progress with an ETA on stderr
    report       `tui.report.write_report` on the demo's runs: table on stdout, files in --out

Ctrl-C checkpoints the current run and puts it back in the queue (exit 130); running the
demo again continues it from that checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import EXIT_INTERRUPTED, require, user_errors
from ..output import database

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from diffbench.storage.db import Database
    from diffbench.storage.runs import RunSpec
    from diffbench.storage.workspace import Workspace

DEMO_TAG = "demo"


def demo(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Folder for the report (report.md, report.html, "
        "figures/). Default: <home>/report.", show_default=False)] = None,
    device: Annotated[str, typer.Option(
        "--device", "-d", envvar="DIFFBENCH_DEVICE",
        help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    epochs: Annotated[int | None, typer.Option(
        "--epochs", "-e", help="Override the sweep's epochs (fewer: a quicker look; the "
        "runs differ from the default demo's, so none are reused).",
        show_default=False)] = None,
    sweep: Annotated[str, typer.Option(
        "--sweep", metavar="NAME|FILE", help="Run this sweep instead (a shipped name or a "
        "sweep file, see diffbench queue sweeps); its runs are tagged demo too.")] = "demo",
    threads: Annotated[int, typer.Option(
        "--threads", metavar="N", help="CPU threads per operation (torch), per worker. The "
        "demo's small model gains ~15 % from a second thread on an idle machine and loses up "
        "to 10× on a busy one.")] = 1,
    workers: Annotated[int | None, typer.Option(
        "--workers", "-w", metavar="N", help="Runs trained at once, each by its own worker "
        "process. Default: 2 on a CPU with 2+ cores (twice the throughput of one worker with "
        "two threads), else 1.", show_default=False)] = None,
) -> None:
    """Run the demo study end to end: make the demo's data set, queue six optimizers (each
    at the setting tuned for the demo preset), train them two at a time with a live display,
    score their samples against the data, then print the comparison and write the report.

    About 5 minutes on 2 CPU cores. Runs already done are reused: run it again after
    Ctrl-C (which checkpoints the current run) and it goes on where it stopped.

    [bold]Examples[/]

      diffbench demo
      diffbench --home /tmp/demo demo --out /tmp/demo/report
      diffbench demo --epochs 5
    """
    from ..report.write import check_out

    workspace: Workspace = ctx.obj
    target = (out if out is not None else workspace.root / "report").expanduser().absolute()
    with user_errors():
        require(epochs is None or epochs > 0, f"--epochs must be positive, got {epochs}")
        require(threads > 0, f"--threads must be positive, got {threads}")
        require(workers is None or workers > 0, f"--workers must be positive, got {workers}")
        specs = demo_specs(sweep, epochs)
        check_out(target)
    _demo(ctx, workspace, specs, target, device, threads, workers)


def demo_specs(sweep: str, epochs: int | None = None) -> list[RunSpec]:
    """The runs of ``sweep`` (a shipped name or a file), tagged demo, ``epochs`` (if given)
    replacing the sweep's; `UserError` for a bad sweep."""
    import dataclasses

    from ..study.sweeps import sweep_path, sweep_specs

    specs = sweep_specs(sweep_path(sweep))
    require(bool(specs), f"sweep {sweep!r} holds no runs")
    return [dataclasses.replace(s, tags=tuple(dict.fromkeys((*s.tags, DEMO_TAG))),
                                epochs=epochs or s.epochs) for s in specs]


def _demo(ctx: typer.Context, workspace: Workspace, specs: Sequence[RunSpec], out: Path,
          device: str, threads: int, workers: int | None) -> None:
    import torch

    from diffbench.engine.config import PresetError, dataset_name
    from diffbench.engine.dataset import DatasetError
    from diffbench.engine.device import DeviceError, resolve_device
    from diffbench.engine.run import RunError

    from ..output import console
    from ..runner.worker import run_config

    err = console(stderr=True)
    with user_errors(DeviceError, PresetError, RunError):
        resolved = resolve_device(device)  # and every run's settings, before writing:
        presets = {dataset_name(c.preset): c.preset for c in (run_config(s, device)
                                                              for s in specs)}
    torch.set_num_threads(threads)  # threads spinning at each op's barrier on a busy machine
    if workers is None:
        workers = 2 if resolved.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1
    with database(ctx) as db:
        try:
            with user_errors(DatasetError):
                for stem, preset in sorted(presets.items()):
                    _ensure_data(workspace.dataset_path(stem), preset, device, err)
            ids, reused = _queue(db, specs)
            err.print(f"demo: {len(ids)} runs ({_describe(specs)}) on {resolved}, "
                      f"{workers} at a time; {reused} of them queued or finished before",
                      markup=False)
            left = _unfinished(db, ids)
            helpers = _helpers(ctx, workspace, left, device, threads, min(workers, len(left)) - 1)
            code = _train(db, workspace, ids, device, err, helpers) if left else 0
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        if code == EXIT_INTERRUPTED:
            err.print("interrupted: a run in training is checkpointed and back in the queue; "
                      "run diffbench demo again to go on", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED)
        _report(db, out, specs)


def _helpers(ctx: typer.Context, workspace: Workspace, ids: Sequence[int], device: str,
             threads: int, count: int) -> list[subprocess.Popen]:
    """``count`` `diffbench worker` processes that claim only runs ``ids`` and exit when none
    is left. They share this terminal's process group, so Ctrl-C reaches them too: each
    checkpoints its run and puts it back in the queue."""
    from ..output import DB_KEY
    from ..runner.gpus import worker_command

    args = worker_command(workspace, ctx.find_root().meta.get(DB_KEY), "--device", device,
                          "--threads", str(threads), "--idle-exit", "0",
                          *(f"--run={run_id}" for run_id in ids))
    return [subprocess.Popen(args, stdout=subprocess.DEVNULL) for _ in range(count)]


def _interrupt(helpers: Sequence[subprocess.Popen]) -> None:
    for helper in helpers:
        if helper.poll() is None:
            helper.send_signal(signal.SIGINT)


def _train(db: Database, workspace: Workspace, ids: Sequence[int], device: str,
           err: Console, helpers: Sequence[subprocess.Popen] = ()) -> int:
    """Train the demo's unfinished runs in this process, ``helpers`` training beside it, with
    the live display; the worst exit code."""
    from ..runner.worker import Worker

    started = time.monotonic()
    with Display(db, ids, err):
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
    left = _unfinished(db, ids)
    err.print(f"demo: {len(ids) - len(left)} of {len(ids)} runs finished; training took "
              f"{_clock(time.monotonic() - started)}", markup=False)
    return code


def _queue(db: Database, specs: Sequence[RunSpec]) -> tuple[list[int], int]:
    """Queue the specs; the demo's run ids and how many existed already. `enqueue` skips
    runs queued, running or done; diverged ones are final results too, so they are reused
    rather than queued again."""
    from diffbench.storage.queue import enqueue, list_runs

    diverged = {r.identity: r.id for r in list_runs(db, status="diverged")}
    queued = enqueue(db, [s for s in specs if s.identity not in diverged])
    reused = {*(run_id for _, run_id in queued.skipped),
              *(diverged[s.identity] for s in specs if s.identity in diverged)}
    return sorted({*queued.ids, *reused}), len(reused)


def _describe(specs: Sequence[RunSpec]) -> str:
    """``demo, 375 epochs`` (``40–80 epochs`` when they differ)."""
    presets = ", ".join(dict.fromkeys(s.preset for s in specs))
    epochs = sorted({s.epochs for s in specs if s.epochs is not None})
    span = "–".join(str(e) for e in dict.fromkeys((epochs[0], epochs[-1]))) if epochs else "?"
    return f"{presets}, {span} epochs"


def _ensure_data(path: Path, preset: Any, device: str, err: Console) -> None:
    """Generate the preset's data set unless it is there (under the worker's file lock)."""
    from ..output import GenerationProgress
    from ..runner.provision import ensure_dataset

    if path.exists():
        return
    with GenerationProgress(err, preset.data.trajectories) as report:  # ensure_dataset says what
        ensure_dataset(preset, path, device, progress=report)


def _unfinished(db: Database, ids: Sequence[int]) -> list[int]:
    from diffbench.storage import states
    from diffbench.storage.queue import list_runs

    return [r.id for r in list_runs(db, ids=ids) if r.status not in states.FINAL]


def _report(db: Database, out: Path, specs: Sequence[RunSpec]) -> None:
    from ..errors import UserError, fail
    from ..report.write import NoRuns, write_report

    filters = [f"tag:{DEMO_TAG}", "preset:" + ",".join(dict.fromkeys(s.preset for s in specs))]
    try:
        write_report(db, out, filters=filters)
    except NoRuns as message:
        typer.echo(str(message), err=True)
    except UserError as error:
        raise fail(str(error)) from None


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


class Display:
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
        self.thread = threading.Thread(target=self._poll, name="demo-display", daemon=True)
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

    def __enter__(self) -> Display:
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
