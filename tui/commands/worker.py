"""`diffbench worker`: the command that starts the runner (`tui/runner/`) on this machine:
one worker here, or with ``--gpus``/``--per-gpu`` a supervisor of one worker per GPU slot.

SIGTERM/SIGINT ask the trainer to stop after its current step; it checkpoints, the run goes
back to the queue and the worker exits (0 after SIGTERM, 130 after SIGINT). A second signal
stops at once: the run goes back to the queue and resumes from its last checkpoint.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from diffbench.storage.workspace import Workspace

from ..errors import error_console, user_errors

DB_META_KEY = "diffbench.db_url"  # where the root callback puts the global --db


def worker(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(
        "--device", "-d", envvar="DIFFBENCH_DEVICE",
        help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    gpus: Annotated[str | None, typer.Option(
        "--gpus", metavar="0,1|all", help="One worker process per listed GPU, each seeing only "
        "its GPU (CUDA_VISIBLE_DEVICES); 'all': every visible GPU. Repeat an index for "
        "several workers on one GPU: 0,0,0,0 is four on GPU 0.", show_default=False)] = None,
    per_gpu: Annotated[str | None, typer.Option(
        "--per-gpu", metavar="N", help="Workers on each GPU of --gpus (without --gpus: on "
        "every visible GPU). Workers on one GPU share it through CUDA MPS, which diffbench "
        "starts and stops when nvidia-cuda-mps-control is installed; else by time-slicing. "
        "Default: 1.", show_default=False)] = None,
    max_runs: Annotated[int | None, typer.Option(
        "--max-runs", metavar="N", help="Exit after N runs.", show_default=False)] = None,
    idle_exit: Annotated[float | None, typer.Option(
        "--idle-exit", metavar="SECONDS", help="Exit when the queue has been empty this long.",
        show_default=False)] = None,
    lease: Annotated[float, typer.Option(
        "--lease", metavar="SECONDS", help="Lease of a claimed run; heartbeats every third "
        "of it. A run whose worker is silent this long goes back to the queue.")] = 60.0,
    max_attempts: Annotated[int, typer.Option(
        "--max-attempts", metavar="N", envvar="DIFFBENCH_MAX_ATTEMPTS",
        help="A run that loses its worker N times (its lease expired: the worker was killed, "
        "ran out of memory, froze or lost its machine) ends failed, saying so. A release on "
        "SIGTERM/SIGINT or preemption is no loss.")] = 3,
    db_url: Annotated[str | None, typer.Option(
        "--db", metavar="URL", help="Job database (SQLAlchemy URL); also the global --db. "
        "Default: $DIFFBENCH_DB, else <home>/diffbench.db.", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", metavar="N", help="CPU threads per torch operation. Default: torch's "
        "(one per core). Several CPU workers on one machine want cores / workers each: "
        "threads beyond the free cores spin at every operation's barrier.",
        show_default=False)] = None,
    only: Annotated[list[int] | None, typer.Option(
        "--run", metavar="ID", help="Claim only this run (repeat for several); with "
        "--idle-exit 0 the worker ends once they are all trained.", show_default=False)] = None,
) -> None:
    """Claim queued runs and train them until stopped.

    Each run trains in <home>/runs/<id>/ (checkpoints there); metrics go to the database.
    SIGTERM or Ctrl-C checkpoints the current run, puts it back in the queue and exits.

    [bold]Examples[/]

      diffbench worker --device cuda:0
      diffbench worker --gpus all
      diffbench worker --gpus 0 --per-gpu 4   # four runs share GPU 0 (CUDA MPS when available)
      diffbench worker --max-runs 1 --idle-exit 60
      diffbench worker --device cpu --threads 1      # one of several CPU workers
      diffbench worker --run 7 --run 8 --idle-exit 0 # just these runs, then exit
    """
    from ..errors import require
    from ..runner.gpus import expand_gpus, spawn_per_gpu
    from ..runner.worker import Worker

    workspace: Workspace = ctx.obj
    db_url = db_url or _global_db(ctx)
    with user_errors():
        require(max_runs is None or max_runs > 0, f"--max-runs must be positive, got {max_runs}")
        require(idle_exit is None or idle_exit >= 0,
                f"--idle-exit must be non-negative, got {idle_exit}")
        require(lease > 0, f"--lease must be positive, got {lease}")
        require(max_attempts > 0, f"--max-attempts must be positive, got {max_attempts}")
        require(threads is None or threads > 0, f"--threads must be positive, got {threads}")
        require(per_gpu is None or (per_gpu.strip().isdecimal() and int(per_gpu) > 0),
                f"--per-gpu takes a positive integer, got {per_gpu!r}")
        require(not only or (gpus is None and per_gpu is None),
                "--run trains runs in this process: it does not combine with --gpus/--per-gpu")
    if gpus is not None or per_gpu is not None:
        with user_errors():
            ids = expand_gpus(gpus or "all", per_gpu=int(per_gpu or 1),
                              visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
        os.environ["DIFFBENCH_MAX_ATTEMPTS"] = str(max_attempts)  # the children's default
        raise typer.Exit(spawn_per_gpu(ids, workspace, db_url, max_runs, idle_exit, lease,
                                        threads))

    from diffbench.engine.device import DeviceError, resolve_device
    from diffbench.storage.db import StorageError, open_database
    from diffbench.storage.hosts import SharedSQLite, network_warning

    with user_errors(DeviceError, StorageError):
        resolve_device(device)
        db = open_database(db_url, home=workspace.root)
    if warning := network_warning(db.engine.url.render_as_string(hide_password=False)):
        error_console().print(f"diffbench: warning: {warning}", markup=False)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    with user_errors(SharedSQLite):  # another host's live worker on this SQLite file
        code = Worker(db, workspace, device=device, lease_s=lease, runs=only or None,
                      max_attempts=max_attempts).serve(max_runs=max_runs, idle_exit=idle_exit)
    db.dispose()
    raise typer.Exit(code)


def _global_db(ctx: typer.Context) -> str | None:
    """The root command's ``--db`` (the root callback keeps it in ``ctx.meta``), if any;
    None lets `open_database` fall back to ``$DIFFBENCH_DB``, then the workspace file."""
    return ctx.find_root().meta.get(DB_META_KEY) or ctx.find_root().params.get("db_url")
