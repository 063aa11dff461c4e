"""The `diffbench` command line: one Typer app per command group, composed here.

Importing this module must stay cheap: no torch, no Textual. Commands import the engine
inside their bodies (tests/test_cli_data.py checks this).

`main` asks OpenMP to let idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) unless the user
chose otherwise: torch's threads otherwise spin at every operation's barrier, and on a machine
whose cores another process also uses, the spinning threads take the cores from the working
ones (docs/PERFORMANCE.md: with a second torch process on 2 cores, data generation 40× and a
`tiny` training step 70× slower with spinning threads, ≈ 1–3× with passive ones). It must be
set before torch is first imported, which commands do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from diffbench.storage.workspace import ENV_VAR, Workspace

from .commands import (
    calibrate,
    dashboard,
    data,
    db,
    demo,
    queue,
    report,
    runs,
    slurm,
    train,
    worker,
    workers,
)
from .output import DB_KEY

app = typer.Typer(
    name="diffbench",
    help=(
        "Benchmark optimizers and learning-rate schedules for diffusion models of 2-D "
        "Kolmogorov flow (arXiv 2510.19376).\n\n"
        "Start with [bold]diffbench data generate --preset tiny[/], then "
        "[bold]diffbench data info[/] and [bold]diffbench data preview[/] on the file it wrote."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(data.app, name="data")
app.command(name="train")(train.train)
app.add_typer(queue.app, name="queue")
app.add_typer(runs.app, name="runs")
app.add_typer(db.app, name="db")
app.command(name="worker")(worker.worker)
app.add_typer(workers.app, name="workers")
app.add_typer(slurm.app, name="slurm")
app.command(name="tui")(dashboard.tui)
app.command(name="report")(report.report)
app.command(name="calibrate")(calibrate.calibrate)
app.command(name="demo")(demo.demo)


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            envvar=ENV_VAR,
            metavar="DIR",
            help="Workspace directory for data sets (and later runs). "
            "Default: the platform's user data directory.",
            show_default=False,
        ),
    ] = None,
    db_url: Annotated[
        str | None,
        typer.Option(
            "--db",
            envvar="DIFFBENCH_DB",
            metavar="URL",
            help="Job database, any SQLAlchemy URL (sqlite:////path/x.db, "
            "postgresql://…). Default: <home>/diffbench.db.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Resolve the workspace once; commands find it on ``ctx.obj`` (and ``--db`` in
    ``ctx.meta``)."""
    ctx.obj = Workspace.resolve(home)
    ctx.meta[DB_KEY] = db_url
    # Compiled kernels kept with the workspace, not in /tmp: a later run of the same shapes
    # (this worker's next run, another worker, after a reboot) loads them instead of compiling.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ctx.obj.root / "cache" / "inductor"))


def main() -> None:
    """Console-script entry point."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any command imports torch
    app(prog_name="diffbench")
