"""Sweep files: a study as data (TOML or YAML), one grid or a union of grids, shipped ones
in `diffbench.presets.sweeps` (docs in README "Queueing a study").
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.engine.vocabulary import lr_problem, weight_decay_problem

from ..errors import UserError, require
from .plan import Grid, parse_floats, parse_seeds, parse_sets, resolve_specs, split_list

if TYPE_CHECKING:
    from diffbench.storage.runs import RunSpec

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
