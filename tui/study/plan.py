"""A grid of runs, checked and resolved against its preset into `RunSpec`s that carry the
resolved run (so a worker trains what was validated here, whatever the preset file says
later). Bad values raise `UserError` with one line.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.engine.vocabulary import OPTIMIZERS, PRECISIONS, SCHEDULES

from ..errors import UserError, require

if TYPE_CHECKING:
    from diffbench.storage.runs import RunSpec

# Run settings a queued run may set with an undotted --set key (not preset keys): how a step
# is computed, and its precision. The values each takes.
RUN_KEYS: dict[str, tuple[object, ...]] = {"precision": PRECISIONS,
                                           "deterministic": (True, False),
                                           "channels_last": (True, False),
                                           "compile": (True, False),
                                           "cuda_graph": (True, False)}


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
    from diffbench.storage.runs import RunSpec

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
        defaults = resolved.optimizers.get(optimizer)
        require(defaults is not None or (grid.lrs and grid.wds),
                f"preset {resolved.name!r} has no defaults for optimizer {optimizer!r}; "
                "give --lr and --wd")
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
