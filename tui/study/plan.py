"""A grid of runs, checked and resolved against its preset into `RunSpec`s that carry the
resolved run (so a worker trains what was validated here, whatever the preset file says
later). Bad values raise `UserError` with one line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.engine.vocabulary import OPTIMIZERS, SCHEDULES, unknown

from ..errors import UserError, require

if TYPE_CHECKING:
    from diffbench.engine.config import Preset
    from diffbench.engine.run_config import RunConfig
    from diffbench.storage.runs import RunSpec

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
    from diffbench.engine.run_config import RunError, split_settings
    from diffbench.storage.runs import RunSpec

    require(bool(grid.optimizers), f"--optimizer is required; one or more of "
            f"{', '.join(OPTIMIZERS)}")
    for problem in (*(unknown("optimizer", n, OPTIMIZERS) for n in grid.optimizers),
                    *(unknown("schedule", n, SCHEDULES) for n in grid.schedules)):
        require(problem is None, str(problem))
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
    try:
        settings, changes = split_settings(sets)
        if epochs is not None:
            changes["train.epochs"] = epochs
        preset = load_preset(grid.preset)
        resolved = override(preset, changes) if changes else preset
    except (PresetError, RunError) as error:  # a UserError like every other check here
        raise UserError(str(error)) from None
    name = grid.preset
    if Path(name).suffix == ".toml" or "/" in name:  # a file: where a worker finds it
        name = str(Path(name).expanduser().absolute())
    try:
        return [RunSpec(preset=name, optimizer=run.optimizer, schedule=run.schedule,
                        lr=run.lr, weight_decay=run.weight_decay, seed=run.seed,
                        epochs=resolved.train.epochs, overrides=sets, priority=grid.priority,
                        tags=grid.tags, config=run.to_dict())
                for run in _runs(grid, resolved, settings)]
    except RunError as error:
        raise UserError(str(error)) from None


def _runs(grid: Grid, preset: Preset, settings: dict[str, Any]) -> Iterator[RunConfig]:
    """The grid's runs on ``preset``: what each trains, validated here, stored with the run
    and trained as stored (`runner.worker.run_config`, on the worker's device)."""
    from diffbench.engine.run_config import RunConfig
    from diffbench.engine.vocabulary import run_schedule

    for optimizer in grid.optimizers:
        defaults = preset.optimizers.get(optimizer)
        require(defaults is not None or (grid.lrs and grid.wds),
                f"preset {preset.name!r} has no defaults for optimizer {optimizer!r}; "
                "give --lr and --wd")
        # one spelling of what ScheduleFree trains, so a run queued another way is a duplicate
        for schedule in dict.fromkeys(run_schedule(optimizer, s) for s in grid.schedules):
            for lr in grid.lrs or [defaults.lr]:
                for wd in grid.wds or [defaults.weight_decay]:
                    for seed in grid.seeds:
                        yield RunConfig(preset=preset, optimizer=optimizer, lr=lr,
                                        weight_decay=wd, schedule=schedule, seed=seed,
                                        **settings)
