"""`diffbench queue …`: queue a grid of runs, list the queue, cancel, retry, remove.

`queue add` validates every value (preset, optimizers, schedules, lrs, decays, seeds,
``--set`` keys) before it opens the database, so bad input exits 2 with one line and
writes nothing. Loading the preset needs no torch (`engine.config` is torch-free).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diffbench.engine.vocabulary import (
    OPTIMIZERS,
    SCHEDULES,
    lr_problem,
    weight_decay_problem,
)

from .errors import UserError, require, user_errors
from .output import JsonOption, console, database, notice, print_json, print_table, run_dict
from .train import RUN_KEYS

if TYPE_CHECKING:
    from diffbench.storage.queue import RunSpec

app = typer.Typer(
    help="Queue runs (a grid of optimizers × schedules × lrs × decays × seeds) and manage "
    "the queue. Workers ([bold]diffbench worker[/]) train them.",
    no_args_is_help=True,
    rich_markup_mode="rich",
)

STATUSES = ("queued", "running", "done", "failed", "diverged", "cancelled")
QUEUE_COLUMNS = ("id", "status", "priority", "preset", "optimizer", "schedule", "lr", "wd",
                 "seed", "epochs", "steps", "attempts", "tags")

# ----------------------------------------------------------------------------- parsing


def split_list(values: list[str] | None) -> list[str]:
    """Repeated and comma-separated values, in order, without blanks or repeats."""
    items = [v.strip() for value in values or () for v in value.split(",")]
    return list(dict.fromkeys(v for v in items if v))


def parse_floats(values: list[str] | None, option: str,
                 problem: Callable[[float, str], str | None]) -> list[float]:
    """Numbers from repeated and comma-separated ``values``, each checked by ``problem``
    (`vocabulary.lr_problem` or `weight_decay_problem`), in order, without repeats."""
    out = []
    for text in split_list(values):
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{option}: {text!r} is not a number") from None
        error = problem(value, option)
        require(error is None, str(error))
        out.append(value)
    return list(dict.fromkeys(out))


def parse_seeds(values: list[str] | None) -> list[int]:
    """``0-2`` → 0, 1, 2; ``0,3`` → 0, 3; both may mix (``0-2,5``)."""
    seeds: list[int] = []
    for part in split_list(values):
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise UserError(f"--seeds: {part!r} is not a seed or a range like 0-2") from None
        require(first >= 0, f"--seeds: seeds must be non-negative, got {part!r}")
        require(first <= last, f"--seeds: empty range {part!r} (write low-high)")
        require(last - first < 100_000, f"--seeds: range {part!r} is too long")
        seeds.extend(range(first, last + 1))
    return list(dict.fromkeys(seeds))


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML reads it (``64``, ``1e-3``, ``true``, ``[16, 32]``), else
    the text itself as a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_sets(values: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or ():
        key, eq, text = item.partition("=")
        require(bool(eq) and bool(key.strip()), f"--set takes key=value, got {item!r}")
        out[key.strip()] = parse_value(text.strip())
    return out


@dataclass(frozen=True)
class Grid:
    """The validated axes of `queue add`."""

    preset: str
    optimizers: list[str]
    schedules: list[str]
    lrs: list[float]
    wds: list[float]
    seeds: list[int]
    epochs: int | None
    sets: dict[str, Any]
    priority: int
    tags: tuple[str, ...]


def resolve_specs(grid: Grid) -> list[RunSpec]:
    """The cartesian product as `RunSpec`s, every value checked against the preset (its
    ``--set`` keys via `override`); lr/wd default to the preset's per optimizer and epochs
    to the preset's (so an identical run queued another way is still a duplicate). Bad
    values raise `UserError`."""
    from diffbench.engine.config import PresetError, load_preset, override
    from diffbench.engine.vocabulary import run_schedule
    from diffbench.storage.queue import RunSpec

    require(bool(grid.optimizers), f"--optimizer is required; one or more of "
            f"{', '.join(OPTIMIZERS)}")
    for name in grid.optimizers:
        require(name in OPTIMIZERS, f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    for name in grid.schedules:
        require(name in SCHEDULES, f"unknown schedule {name!r}; known: {', '.join(SCHEDULES)}")
    require(grid.epochs is None or grid.epochs > 0, f"--epochs must be positive, "
            f"got {grid.epochs}")
    sets = dict(grid.sets)
    epochs = grid.epochs
    if "train.epochs" in sets:  # one spelling of epochs, so duplicates are found
        value = sets.pop("train.epochs")
        require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
                f"--set train.epochs must be a positive integer, got {value!r}")
        require(epochs is None or epochs == value,
                f"--epochs {epochs} contradicts --set train.epochs={value}")
        epochs = value
    for key in RUN_KEYS.keys() & sets.keys():
        value, allowed = sets[key], RUN_KEYS[key]
        require(value in allowed and type(value) in {type(v) for v in allowed},
                f"--set {key} takes {' or '.join(str(v).lower() for v in allowed)}, "
                f"got {value!r}")
    changes = {key: value for key, value in sets.items() if key not in RUN_KEYS}
    if epochs is not None:
        changes["train.epochs"] = epochs
    try:
        preset = load_preset(grid.preset)
        resolved = override(preset, changes) if changes else preset
    except PresetError as error:  # a UserError like every other check here
        raise UserError(str(error)) from None
    # the run as validated here, stored with it and trained as stored (`worker.run_config`):
    # `RunConfig.to_dict()` without the device (the worker's) and with only the run
    # settings given (the rest take `RunConfig`'s defaults), so no torch is needed to plan
    run_settings = {key: sets[key] for key in RUN_KEYS if key in sets}
    name = grid.preset
    if Path(name).suffix == ".toml" or "/" in name:  # a file: where a worker finds it
        name = str(Path(name).expanduser().absolute())
    specs = []
    for optimizer in grid.optimizers:
        defaults = resolved.optimizers[optimizer]
        # one spelling of what ScheduleFree trains, so a run queued another way is a duplicate
        for schedule in dict.fromkeys(run_schedule(optimizer, s) for s in grid.schedules):
            for lr in grid.lrs or [defaults.lr]:
                for wd in grid.wds or [defaults.weight_decay]:
                    for seed in grid.seeds:
                        config = {"preset": resolved.to_dict(), "optimizer": optimizer,
                                  "schedule": schedule, "lr": lr, "weight_decay": wd,
                                  "seed": seed, **run_settings}
                        specs.append(RunSpec(
                            preset=name, optimizer=optimizer, schedule=schedule, lr=lr,
                            weight_decay=wd, seed=seed, epochs=resolved.train.epochs,
                            overrides=sets, priority=grid.priority, tags=grid.tags,
                            config=config))
    return specs


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


# ----------------------------------------------------------------------------- sweep files

SWEEP_KEYS = ("preset", "optimizer", "schedule", "lr", "wd", "seeds", "epochs", "set",
              "priority", "tag")
SWEEP_SUFFIXES = (".toml", ".yaml", ".yml")
SWEEPS_FOLDER = "sweeps"  # inside diffbench.presets: the shipped sweeps


def shipped_sweeps() -> dict[str, Path]:
    """The sweeps shipped in ``diffbench.presets/sweeps`` by name (``paper-best`` …)."""
    from importlib import resources

    folder = resources.files("diffbench.presets").joinpath(SWEEPS_FOLDER)
    return {f.name.removesuffix(".toml"): Path(str(f)) for f in sorted(
        folder.iterdir(), key=lambda f: f.name) if f.name.endswith(".toml")}


def sweep_path(name_or_file: str) -> Path:
    """A shipped sweep by name, or a sweep file: a value with a suffix or a ``/`` is a
    path (as with presets), anything else a name."""
    if Path(name_or_file).suffix.lower() in SWEEP_SUFFIXES or "/" in name_or_file:
        return Path(name_or_file).expanduser()
    sweeps = shipped_sweeps()
    require(name_or_file in sweeps, f"unknown sweep {name_or_file!r}; shipped: "
            f"{', '.join(sweeps)} (or a path to a .toml/.yaml sweep file)")
    return sweeps[name_or_file]


YAML_SUFFIXES = (".yaml", ".yml")


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML sweep file's top-level mapping (PyYAML's safe loader; imported only here)."""
    import yaml

    try:
        table = yaml.safe_load(path.read_text())
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: invalid YAML: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        where = "" if mark is None else f" at line {mark.line + 1}, column {mark.column + 1}"
        raise UserError(f"{path}: invalid YAML: {problem}{where}") from None
    require(isinstance(table, dict), f"{path}: a YAML sweep must be a mapping of keys "
            f"({', '.join(SWEEP_KEYS)}, grid), got {type(table).__name__}")
    return table


def read_sweep(path: Path) -> dict[str, Any]:
    """A TOML or YAML (``.yaml``/``.yml``) sweep file's top-level table, as written."""
    require(path.is_file(), f"sweep file {str(path)!r} does not exist")
    if path.suffix.lower() in YAML_SUFFIXES:
        return _read_yaml(path)
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: invalid TOML: {error}") from None


def load_sweep(path: Path) -> list[dict[str, Any]]:
    """A sweep file's grids: its keys (`SWEEP_KEYS`, each a value or a list) make one grid;
    or ``[[grid]]`` tables (YAML: a ``grid:`` list of mappings) make a union of grids, each
    inheriting the top-level keys. A top-level ``description`` (one line) is for people."""
    table = read_sweep(path)
    description = table.pop("description", "")
    require(isinstance(description, str), f"{path}: description must be a string")
    grids = table.pop("grid", [{}])
    require(isinstance(grids, list) and all(isinstance(g, dict) for g in grids) and grids,
            f"{path}: grid must be a list of tables ([[grid]], or a YAML list of mappings)")
    out = []
    for number, grid in enumerate(grids, 1):
        merged = {**table, **grid}
        for key, value in merged.items():
            where = f"{path}: grid {number}: " if len(grids) > 1 else f"{path}: "
            require(key in SWEEP_KEYS, f"{where}unknown key {key!r}; known: "
                    f"{', '.join(SWEEP_KEYS)}")
            if key == "set":
                require(isinstance(value, dict) and all(isinstance(k, str) for k in value),
                        f"{where}set must be a table of dotted keys, "
                        "e.g. set = { \"train.batch_size\" = 16 }")
            elif key in ("preset", "epochs", "priority"):
                require(not isinstance(value, list | dict), f"{where}{key} takes one value")
        out.append(merged)
    return out


def _strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [str(v) for v in (value if isinstance(value, list) else [value])]


def _int(value: Any, name: str) -> int:
    require(isinstance(value, int) and not isinstance(value, bool),
            f"{name} must be an integer, got {value!r}")
    return value


def sweep_grids(path: Path, cli: dict[str, Any]) -> list[Grid]:
    """The grids of a sweep file; options given on the command line are their defaults."""
    grids = []
    for table in load_sweep(path):
        def pick(key: str, table: dict[str, Any] = table) -> Any:
            return table[key] if key in table else cli[key]

        sets = {**parse_sets(cli["set"]), **table.get("set", {})}
        epochs = pick("epochs")
        grids.append(Grid(
            preset=str(pick("preset")), optimizers=split_list(_strings(pick("optimizer"))),
            schedules=split_list(_strings(pick("schedule"))) or ["linear"],
            lrs=parse_floats(_strings(pick("lr")), "lr", lr_problem),
            wds=parse_floats(_strings(pick("wd")), "wd", weight_decay_problem),
            seeds=parse_seeds(_strings(pick("seeds"))) or [0],
            epochs=None if epochs is None else _int(epochs, "epochs"), sets=sets,
            priority=_int(pick("priority"), "priority"),
            tags=tuple(split_list(_strings(pick("tag"))))))
    return grids


def sweep_specs(path: Path, cli: dict[str, Any] | None = None) -> list[RunSpec]:
    """Every run of a sweep file, in order (``cli``: command-line defaults by sweep key)."""
    defaults = {key: None for key in SWEEP_KEYS} | {"preset": "paper", "priority": 0}
    return [s for g in sweep_grids(path, defaults | (cli or {})) for s in resolve_specs(g)]


# ----------------------------------------------------------------------------- add


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
    status: Annotated[Many, typer.Option(
        "--status", metavar="S[,S…]", help=f"Only runs in these states ({', '.join(STATUSES)}). "
        "Default: all.", show_default=False)] = None,
    json_: JsonOption = False,
) -> None:
    """List runs: status, hyperparameters, progress and attempts."""
    wanted = split_list(status)
    with user_errors():
        for name in wanted:
            require(name in STATUSES, f"unknown status {name!r}; known: {', '.join(STATUSES)}")
    _ls(ctx, wanted or None, as_json=json_)


def _ls(ctx: typer.Context, status: list[str] | None, *, as_json: bool) -> None:
    from diffbench.storage.queue import list_runs

    with database(ctx) as db:
        runs = list_runs(db, status=status)
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
