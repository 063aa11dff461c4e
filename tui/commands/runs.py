"""`diffbench runs …`: results — list, show one run, export a table of all.

A run's row (`run_row`) holds its id, status, hyperparameters, progress, attempts, every
key of its summary (final/best losses, step times, wall time, …, flattened with dots when
nested), its provenance (device, git commit, …) and its times. `runs ls`, `runs export`
and `runs show --json` print the same rows.

`runs export PATH --metrics` also writes the per-epoch curves in long format (one row per
run and epoch): beside a CSV or parquet file as ``<stem>-epochs.<ext>``; inside a JSON
export as each run's ``"epochs"`` list.

The fixed-noise loss per noise level (t-bin) is one column per bin in every format, named
by the bin's edges (`output.t_bin`): ``fixed_valid_t0.90-0.95`` per epoch,
``final_fixed_valid_t0.90-0.95`` per run (the summary's last-epoch bins; the edges, which
the names carry, are not a column of their own). Runs from before the bins were measured
have none: empty cells.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import UserError, require, user_errors
from ..output import (
    JsonOption,
    StatusOption,
    check_status,
    console,
    database,
    filter_option,
    notice,
    plain,
    print_json,
    print_table,
    run_dict,
    run_filter,
)
from ..study.export import (
    EPOCH_FIELDS,
    FORMATS,
    LS_SUMMARY,
    columns,
    epoch_columns,
    epoch_rows,
    run_row,
    write_csv,
    write_parquet,
)

if TYPE_CHECKING:
    from diffbench.storage.filters import RunFilter

app = typer.Typer(
    help="Results: list runs with their summary metrics, show one, export them all.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

# ----------------------------------------------------------------------------- ls


@app.command("ls")
def ls(ctx: typer.Context, status: StatusOption = None,
       filters: Annotated[list[str] | None, filter_option("--filter", "-f")] = None,
       json_: JsonOption = False) -> None:
    """List runs with their hyperparameters and summary metrics (all of them with --json).

    [bold]Examples[/]

      diffbench runs ls --filter opt:muon,soap --filter preset:paper*
      diffbench runs ls --filter "status:done sched:cosine" --json
    """
    with user_errors():
        chosen = run_filter(filters)
    _ls(ctx, check_status(status), chosen, as_json=json_)


def _ls(ctx: typer.Context, status: list[str] | None, chosen: RunFilter, *,
        as_json: bool) -> None:
    from diffbench.storage.filters import filtered_runs

    with database(ctx) as db:
        rows = [run_row(r) for r in filtered_runs(db, chosen, status=status)]
    if as_json:
        print_json(rows)
        return
    shown = ["id", "status", "optimizer", "schedule", "lr", "wd", "seed", "epochs",
             "steps_done", "attempts"]
    shown += [c for c in LS_SUMMARY if any(r.get(c) is not None for r in rows)]
    print_table(shown, [[r.get(c) for c in shown] for r in rows])


# ----------------------------------------------------------------------------- show


@app.command()
def show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(metavar="ID", help="Run id.")],
    json_: JsonOption = False,
) -> None:
    """Everything about one run: settings, summary, provenance, per-epoch metrics, error."""
    _show(ctx, run_id, as_json=json_)


def _show(ctx: typer.Context, run_id: int, *, as_json: bool) -> None:
    from diffbench.storage.queue import get_run

    with database(ctx) as db:
        run = get_run(db, run_id)
        epochs = epoch_rows(db, run)
    if as_json:
        print_json({**run_dict(run), "epochs": epochs})
        return
    from rich.markup import escape
    from rich.table import Table

    out = console()
    info = Table(title=f"Run {run.id}", title_justify="left", show_header=False)
    info.add_column("key", style="bold")
    info.add_column("value", overflow="fold")
    from ..output import fmt

    for key, value in run_row(run).items():
        info.add_row(key, escape(fmt(value)))
    for key in ("overrides", "checkpoint"):
        if getattr(run, key):
            info.add_row(key, escape(fmt(json.dumps(getattr(run, key)) if key == "overrides"
                                         else getattr(run, key))))
    out.print(info)
    if epochs:
        print_table(EPOCH_FIELDS[1:], [[e[c] for c in EPOCH_FIELDS[1:]] for e in epochs],
                    title="Epochs")
    bins = epoch_columns(epochs)[len(EPOCH_FIELDS):]
    binned = [e for e in epochs if any(c in e for c in bins)]
    if binned:
        print_table(["epoch", *(c.removeprefix("fixed_valid_") for c in bins)],
                    [[e["epoch"], *(e.get(c) for c in bins)] for e in binned],
                    title="Fixed-noise validation loss by noise level (t-bin)")
    if run.traceback:
        out.print(run.traceback, markup=False, highlight=False)


# ----------------------------------------------------------------------------- export


@app.command()
def export(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(metavar="PATH", help="File to write.")],
    format: Annotated[str | None, typer.Option(
        "--format", "-f", help="csv, json or parquet (needs pyarrow). Default: from PATH's "
        "suffix, else csv.", show_default=False)] = None,
    metrics: Annotated[bool, typer.Option(
        "--metrics", help="Also export the per-epoch curves (long format): "
        "<stem>-epochs.csv/.parquet beside PATH, or an \"epochs\" list per run in JSON.")
    ] = False,
    status: StatusOption = None,
    filters: Annotated[list[str] | None, filter_option("--filter")] = None,
) -> None:
    """Write one row per run (settings, summary metrics, provenance, times) to PATH.

    [bold]Examples[/]

      diffbench runs export results.csv
      diffbench runs export results.json --metrics --status done
      diffbench runs export muon.csv --filter opt:muon --filter tag:sweep1
    """
    wanted = check_status(status)
    with user_errors():
        chosen = run_filter(filters)
        kind = format or (path.suffix.lstrip(".").lower()
                          if path.suffix.lstrip(".").lower() in FORMATS else "csv")
        require(kind in FORMATS, f"--format must be one of {', '.join(FORMATS)}, got {kind!r}")
        if kind == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise UserError("parquet export needs pyarrow (pip install pyarrow); "
                                "use --format csv or json") from None
        require(not path.is_dir(), f"{path} is a directory")
        require(path.parent.is_dir(), f"cannot write {path}: {path.parent} does not exist")
    _export(ctx, path, kind, metrics=metrics, status=wanted, chosen=chosen)


def _export(ctx: typer.Context, path: Path, kind: str, *, metrics: bool,
            status: list[str] | None, chosen: RunFilter) -> None:
    from diffbench.storage.filters import filtered_runs

    with database(ctx) as db:
        runs = filtered_runs(db, chosen, status=status)
        rows = [run_row(r) for r in runs]
        epochs = [e for r in runs for e in epoch_rows(db, r)] if metrics else []
    names = columns(rows)
    written = [path]
    with user_errors():
        if kind == "json":
            by_run: dict[int, list[dict[str, Any]]] = {}
            for e in epochs:
                by_run.setdefault(e["run_id"], []).append(e)
            data = [{**r, "epochs": by_run.get(r["id"], [])} if metrics else r for r in rows]
            path.write_text(json.dumps(plain(data), indent=2, allow_nan=False) + "\n")
        else:
            side = path.with_name(f"{path.stem}-epochs{path.suffix or '.' + kind}")
            write = write_csv if kind == "csv" else write_parquet
            write(path, names, rows)
            if metrics:
                write(side, epoch_columns(epochs), epochs)
                written.append(side)
    notice(f"exported {len(rows)} runs to {', '.join(map(str, written))}")
