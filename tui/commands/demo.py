"""`diffbench demo`: the whole study in one command, sized for a laptop (2 CPU cores).

    data set     generated once if missing (the worker's file lock, a progress bar)
    queue        the `demo` sweep (presets/sweeps/demo.toml), tagged ``demo``; a run already
                 queued, running or done is not queued again, so a re-run reuses it
    workers      (`runner.study`) a `Worker` in this process and ``--workers`` − 1 `diffbench
                 worker --run …` processes beside it, claiming only the demo's runs
    display      a poller thread reads the job database (as the dashboard does) and draws
                 one line per run and the overall progress with an ETA on stderr
    report       `tui.report.write_report` on the demo's runs: table on stdout, files in --out

Ctrl-C checkpoints the current run and puts it back in the queue (exit 130); running the
demo again continues it from that checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import EXIT_INTERRUPTED, require, user_errors
from ..output import database

if TYPE_CHECKING:

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
    from diffbench.engine.run_config import RunError

    from ..output import DB_KEY, console
    from ..runner.provision import provide_dataset
    from ..runner.study import helper_workers, queue_study, train_here, unfinished
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
                    provide_dataset(preset, workspace.dataset_path(stem), device, err)
            ids, reused = queue_study(db, specs)
            err.print(f"demo: {len(ids)} runs ({_describe(specs)}) on {resolved}, "
                      f"{workers} at a time; {reused} of them queued or finished before",
                      markup=False)
            left = unfinished(db, ids)
            helpers = helper_workers(workspace, ctx.find_root().meta.get(DB_KEY), left, device,
                                     threads, min(workers, len(left)) - 1)
            code = train_here(db, workspace, ids, device, err, helpers) if left else 0
        except KeyboardInterrupt:
            code = EXIT_INTERRUPTED
        if code == EXIT_INTERRUPTED:
            err.print("interrupted: a run in training is checkpointed and back in the queue; "
                      "run diffbench demo again to go on", markup=False)
            raise typer.Exit(EXIT_INTERRUPTED)
        _report(db, out, specs)


def _describe(specs: Sequence[RunSpec]) -> str:
    """``demo, 375 epochs`` (``40–80 epochs`` when they differ)."""
    presets = ", ".join(dict.fromkeys(s.preset for s in specs))
    epochs = sorted({s.epochs for s in specs if s.epochs is not None})
    span = "–".join(str(e) for e in dict.fromkeys((epochs[0], epochs[-1]))) if epochs else "?"
    return f"{presets}, {span} epochs"


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


