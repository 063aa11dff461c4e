"""`diffbench queue …`: queue a grid of runs, list the queue, cancel, retry, remove.

`queue add` validates every value (preset, optimizers, schedules, lrs, decays, seeds,
``--set`` keys) before it opens the database, so bad input exits 2 with one line and
writes nothing. Loading the preset needs no torch (`engine.config` is torch-free).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from diffbench.engine.vocabulary import (
    OPTIMIZERS,
    SCHEDULES,
    lr_problem,
    weight_decay_problem,
)

from ..errors import user_errors
from ..output import (
    JsonOption,
    StatusOption,
    check_status,
    console,
    database,
    filter_option,
    notice,
    print_json,
    print_table,
    run_dict,
    run_filter,
)
from ..study.plan import Grid, parse_floats, parse_seeds, parse_sets, resolve_specs, split_list
from ..study.sweeps import read_sweep, shipped_sweeps, sweep_path, sweep_specs

if TYPE_CHECKING:
    from diffbench.storage.filters import RunFilter
    from diffbench.storage.runs import RunSpec

app = typer.Typer(
    help="Queue runs (a grid of optimizers × schedules × lrs × decays × seeds) and manage "
    "the queue. Workers ([bold]diffbench worker[/]) train them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

QUEUE_COLUMNS = ("id", "status", "priority", "preset", "optimizer", "schedule", "lr", "wd",
                 "seed", "epochs", "steps", "attempts", "tags")

# ----------------------------------------------------------------------------- add


def spec_dict(spec: RunSpec, run_id: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {} if run_id is None else {"id": run_id}
    out.update(preset=spec.preset, optimizer=spec.optimizer, schedule=spec.schedule,
               lr=spec.lr, weight_decay=spec.weight_decay, seed=spec.seed,
               epochs=spec.epochs, overrides=dict(spec.overrides), priority=spec.priority,
               tags=list(spec.tags))
    return out


def _spec_row(spec: RunSpec, run_id: Any) -> list[Any]:
    return [run_id, spec.preset, spec.optimizer, spec.schedule, spec.lr, spec.weight_decay,
            spec.seed, spec.epochs]



Many = list[str] | None


@app.command()
def add(
    ctx: typer.Context,
    optimizer: Annotated[Many, typer.Option(
        "--optimizer", "-O", metavar="NAME[,NAME…]",
        help=f"Optimizers ({', '.join(OPTIMIZERS)}); comma-separated or repeated.",
        show_default=False)] = None,
    preset: Annotated[str, typer.Option(
        "--preset", "-p", envvar="DIFFBENCH_PRESET",
        help="Preset name (tiny, small, paper) or a path to a preset .toml.")] = "paper",
    schedule: Annotated[Many, typer.Option(
        "--schedule", "-S", metavar="NAME[,NAME…]",
        help=f"Schedules ({', '.join(SCHEDULES)}). Default: linear.",
        show_default=False)] = None,
    lr: Annotated[Many, typer.Option(
        "--lr", metavar="X[,X…]", help="Peak learning rates (> 0). Default: the preset's "
        "best for each optimizer.", show_default=False)] = None,
    wd: Annotated[Many, typer.Option(
        "--wd", metavar="Y[,Y…]", help="Weight decays (≥ 0). Default: the preset's best "
        "for each optimizer.", show_default=False)] = None,
    seeds: Annotated[Many, typer.Option(
        "--seeds", "--seed", "-s", metavar="0-2|0,3",
        help="Seeds: ranges and lists. Default: 0.", show_default=False)] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", "-e", help="Override the preset's epochs.", show_default=False)] = None,
    set_: Annotated[Many, typer.Option(
        "--set", metavar="KEY=VALUE", help="Override a preset key, e.g. "
        "model.blocks=2 or data.trajectories=64 (repeatable; values read as TOML).",
        show_default=False)] = None,
    priority: Annotated[int, typer.Option(
        "--priority", help="Higher runs first.")] = 0,
    tag: Annotated[Many, typer.Option(
        "--tag", "-t", help="Label the runs (repeatable).", show_default=False)] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", "-n", help="Print what would be queued; write nothing.")] = False,
    allow_duplicates: Annotated[bool, typer.Option(
        "--allow-duplicates", help="Queue runs identical to a queued, running or done "
        "one (skipped with a notice otherwise).")] = False,
    sweep: Annotated[str | None, typer.Option(
        "--sweep", metavar="NAME|FILE", help="A shipped sweep (diffbench queue sweeps) or a "
        "TOML or YAML (.yaml/.yml) sweep file: keys preset, optimizer, schedule, lr, wd, "
        "seeds, epochs, set, priority, tag (values or lists) make one grid; [[grid]] tables "
        "(YAML: a grid: list) make a union of grids. Command-line options are its defaults.",
        show_default=False)] = None,
    json_: JsonOption = False,
) -> None:
    """Queue the cartesian product of the given values; print the new run ids.

    [bold]Examples[/]

      diffbench queue add -p tiny -O adamw,muon --seeds 0-2
      diffbench queue add -O soap --schedule cosine,wsd --lr 1e-3,3e-3 --wd 0,0.032
      diffbench queue add -p small -O sgd --set train.batch_size=16 --tag bs16 --dry-run
      diffbench queue add --sweep paper-best --dry-run
      diffbench queue add --sweep my-sweep.toml --dry-run
      diffbench queue add --sweep sweeps/paper.yaml --dry-run
    """
    if sweep is not None:
        cli = {"preset": preset, "optimizer": optimizer, "schedule": schedule, "lr": lr,
               "wd": wd, "seeds": seeds, "epochs": epochs, "set": set_,
               "priority": priority, "tag": tag}
        with user_errors():
            specs = sweep_specs(sweep_path(sweep), cli)
        _add(ctx, specs, dry_run=dry_run, allow_duplicates=allow_duplicates, as_json=json_)
        return
    with user_errors():
        grid = Grid(
            preset=preset, optimizers=split_list(optimizer),
            schedules=split_list(schedule) or ["linear"],
            lrs=parse_floats(lr, "--lr", lr_problem),
            wds=parse_floats(wd, "--wd", weight_decay_problem),
            seeds=parse_seeds(seeds) or [0], epochs=epochs, sets=parse_sets(set_),
            priority=priority, tags=tuple(split_list(tag)))
        specs = resolve_specs(grid)
    _add(ctx, specs, dry_run=dry_run, allow_duplicates=allow_duplicates, as_json=json_)


def _add(ctx: typer.Context, specs: list[RunSpec], *, dry_run: bool, allow_duplicates: bool,
         as_json: bool) -> None:
    if dry_run:
        if as_json:
            print_json({"dry_run": True, "runs": [spec_dict(s) for s in specs]})
        else:
            print_table(("#", "preset", "optimizer", "schedule", "lr", "wd", "seed",
                         "epochs"), [_spec_row(s, i + 1) for i, s in enumerate(specs)],
                        title=f"would queue {len(specs)} runs (dry run)")
        return
    from diffbench.storage.queue import enqueue

    with database(ctx) as db:
        result = enqueue(db, specs, allow_duplicates=allow_duplicates)
    added = [s for s in specs if not any(s is skipped for skipped, _ in result.skipped)]
    for spec, existing in result.skipped:
        notice(f"skipped: {spec.optimizer} {spec.schedule} lr={spec.lr:g} "
               f"wd={spec.weight_decay:g} seed={spec.seed} duplicates run {existing}")
    if as_json:
        print_json({"ids": list(result.ids),
                    "runs": [spec_dict(s, i) for s, i in zip(added, result.ids, strict=True)],
                    "skipped": [{**spec_dict(s), "duplicate_of": i}
                                for s, i in result.skipped]})
    else:
        for run_id in result.ids:
            typer.echo(run_id)
    notice(f"queued {len(result.ids)} runs"
           + (f", skipped {len(result.skipped)} duplicates" if result.skipped else ""))


# ----------------------------------------------------------------------------- sweeps


@app.command()
def sweeps(json_: JsonOption = False) -> None:
    """List the shipped sweeps: what each queues, and its file (copy it to make your own).

    [bold]Examples[/]

      diffbench queue sweeps
      diffbench queue add --sweep paper-best --dry-run
    """
    rows = []
    with user_errors():
        for name, path in shipped_sweeps().items():
            specs = sweep_specs(path)
            rows.append({"name": name, "runs": len(specs),
                         "presets": sorted({s.preset for s in specs}),
                         "optimizers": list(dict.fromkeys(s.optimizer for s in specs)),
                         "description": read_sweep(path).get("description", ""),
                         "path": str(path)})
    if json_:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="shipped sweeps (diffbench queue add --sweep NAME)",
                  title_justify="left")
    for column in ("name", "runs", "preset", "description", "file"):
        table.add_column(column, justify="right" if column == "runs" else "left")
    for row in rows:
        table.add_row(row["name"], str(row["runs"]), ",".join(row["presets"]),
                      row["description"], row["path"])
    console().print(table)


# ----------------------------------------------------------------------------- ls


@app.command("ls")
def ls(
    ctx: typer.Context,
    status: StatusOption = None,
    filters: Annotated[Many, filter_option("--filter", "-f")] = None,
    json_: JsonOption = False,
) -> None:
    """List runs: status, hyperparameters, progress and attempts.

    [bold]Examples[/]

      diffbench queue ls --status queued,running
      diffbench queue ls --filter opt:muon --filter seed:0 --json
    """
    wanted = check_status(status)
    with user_errors():
        chosen = run_filter(filters)
    _ls(ctx, wanted, chosen, as_json=json_)


def _ls(ctx: typer.Context, status: list[str] | None, chosen: RunFilter, *,
        as_json: bool) -> None:
    from diffbench.storage.filters import filtered_runs

    with database(ctx) as db:
        runs = filtered_runs(db, chosen, status=status)
    if as_json:
        print_json([run_dict(r) for r in runs])
        return
    print_table(QUEUE_COLUMNS, [
        [r.id, r.status.value, r.priority, r.preset, r.optimizer, r.schedule, r.lr,
         r.weight_decay, r.seed, r.epochs, r.steps_done, r.attempts, r.tags] for r in runs])


# ----------------------------------------------------------------------------- cancel, retry, rm

Ids = Annotated[list[int], typer.Argument(metavar="ID…", help="Run ids.", show_default=False)]


@app.command()
def cancel(ctx: typer.Context, ids: Ids, json_: JsonOption = False) -> None:
    """Cancel runs: a queued run at once, a running one at its worker's next step
    (it checkpoints first). Finished runs are left as they are."""
    _change(ctx, "cancel", ids, as_json=json_)


@app.command()
def retry(ctx: typer.Context, ids: Ids, json_: JsonOption = False) -> None:
    """Put failed, diverged or cancelled runs back in the queue (all or none)."""
    _change(ctx, "retry", ids, as_json=json_)


@app.command("rm")
def rm(ctx: typer.Context, ids: Ids, json_: JsonOption = False) -> None:
    """Delete runs and their metrics (all or none; a running run must be cancelled first)."""
    _change(ctx, "rm", ids, as_json=json_)


def _change(ctx: typer.Context, action: str, ids: list[int], *, as_json: bool) -> None:
    from diffbench.storage import queue

    with database(ctx) as db:
        if action == "cancel":
            outcome = queue.cancel(db, ids)
        elif action == "retry":
            outcome = {i: "queued" for i in queue.retry(db, ids)}
        else:
            outcome = {i: "removed" for i in queue.remove(db, ids)}
    if as_json:
        print_json([{"id": i, "outcome": o} for i, o in outcome.items()])
        return
    words = {"requested": "cancel requested (running; stops at its next step)",
             "unchanged": "unchanged (already finished)"}
    for run_id, what in outcome.items():
        typer.echo(f"{run_id}\t{words.get(what, what)}")
