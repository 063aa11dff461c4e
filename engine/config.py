"""Typed presets: one frozen dataclass per TOML section, validated on load.

A preset is the whole recipe of a run (data, model, training, quality assessment). It is
written verbatim into data set attributes and job rows, so every key is required and every
typo is an error: nothing falls back silently to a default. The one exception is a key added
after presets were stored (a dataclass field with a default): its default is what the code did
before the key existed, so a stored preset still means what it meant.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from .vocabulary import OPTIMIZERS, lr_problem, weight_decay_problem


class PresetError(ValueError):
    """A preset that cannot be loaded; the message names the offending key."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise PresetError(message)


@dataclass(frozen=True)
class DataConfig:
    """Kolmogorov-flow data: simulation grid, physics, trajectory layout and splits."""

    section: ClassVar[str] = "data"

    size: int  # simulation grid N (N × N)
    factor: int  # block-mean coarsening factor, N → N / factor
    trajectories: int
    transitions: int  # stored states per trajectory, burn-in included
    burn_in: int  # leading stored states dropped
    inner_steps: int  # solver steps per stored state
    interval: float  # time between stored states
    viscosity: float
    drag: float
    forcing_wavenumber: int
    forcing_amplitude: float
    max_velocity: float  # initial state rescaled to this max speed
    peak_wavenumber: float  # log-normal peak of the initial spectrum
    split: tuple[float, ...]  # train, valid, test fractions
    seed: int
    chunk: int  # trajectories simulated together

    def __post_init__(self) -> None:
        for key in ("size", "factor", "trajectories", "transitions", "inner_steps", "chunk"):
            _require(getattr(self, key) > 0, f"data.{key} must be positive")
        for key in ("interval", "viscosity", "max_velocity", "peak_wavenumber"):
            _require(getattr(self, key) > 0, f"data.{key} must be positive")
        _require(self.drag >= 0, "data.drag must be non-negative")
        _require(self.forcing_wavenumber > 0, "data.forcing_wavenumber must be positive")
        _require(self.size % self.factor == 0,
                 f"data.size ({self.size}) must be divisible by data.factor ({self.factor})")
        _require(0 <= self.burn_in < self.transitions,
                 f"data.burn_in ({self.burn_in}) must be in [0, data.transitions)")
        _require(0 <= self.seed < 2**63, "data.seed must be in [0, 2**63)")
        _require(len(self.split) == 3 and all(f >= 0 for f in self.split),
                 "data.split must be three non-negative fractions (train, valid, test)")
        _require(math.isclose(sum(self.split), 1.0), "data.split must sum to 1")
        _require(min(self.split_sizes) > 0,
                 f"data.trajectories ({self.trajectories}) leaves a split empty: "
                 f"{self.split_sizes} for data.split {list(self.split)}")

    @property
    def resolution(self) -> int:
        """Side of the stored (coarsened) grid."""
        return self.size // self.factor

    @property
    def kept(self) -> int:
        """Stored states per trajectory after burn-in."""
        return self.transitions - self.burn_in

    @property
    def dt(self) -> float:
        """Solver time step."""
        return self.interval / self.inner_steps

    @property
    def split_sizes(self) -> tuple[int, int, int]:
        """(train, valid, test) counts as SDA takes them: floor for train and valid, rest test.

        The 1e-9 keeps floors of exact products (0.7 · 10 = 7.000…01, 0.29 · 100 = 28.99…)
        on the intended integer; it changes no paper count (819/102/103).
        """
        n = self.trajectories
        train = int(self.split[0] * n + 1e-9)
        valid = int(self.split[1] * n + 1e-9)
        return train, valid, n - train - valid


@dataclass(frozen=True)
class ModelConfig:
    """The score U-Net: channels per level, residual blocks per level, window of states."""

    section: ClassVar[str] = "model"

    channels: tuple[int, ...]
    blocks: int
    window: int  # consecutive states per training sample
    embedding: int  # width of the diffusion-time embedding

    def __post_init__(self) -> None:
        _require(len(self.channels) > 0 and all(c > 0 for c in self.channels),
                 "model.channels must be a non-empty list of positive integers")
        _require(self.blocks > 0, "model.blocks must be positive")
        _require(self.window > 0 and self.window % 2 == 1,
                 "model.window must be a positive odd number (scores come from window centres)")
        _require(self.embedding > 0, "model.embedding must be positive")


@dataclass(frozen=True)
class TrainConfig:
    """Training protocol: epochs of one window per trajectory, warm-up, clipping, validation."""

    section: ClassVar[str] = "train"

    epochs: int
    batch_size: int
    warmup_epochs: int
    grad_clip: float  # max gradient norm
    valid_every: int  # epochs between validations
    cooldown: float  # final fraction of the steps that wsd (and sqrt + cooldown) decay over
    checkpoint_every: int  # epochs between resume checkpoints
    samples_every: int  # epochs between preview samples; 0 = never
    sample_count: int  # windows generated per preview
    sample_steps: int  # sampler steps per preview (spec §3: 64, no corrector)

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "valid_every", "checkpoint_every", "sample_count",
                    "sample_steps"):
            _require(getattr(self, key) > 0, f"train.{key} must be positive")
        _require(0 <= self.warmup_epochs <= self.epochs,
                 f"train.warmup_epochs ({self.warmup_epochs}) must be in [0, train.epochs]")
        _require(self.grad_clip > 0, "train.grad_clip must be positive")
        _require(0 <= self.cooldown <= 1, "train.cooldown must be in [0, 1]")
        _require(self.samples_every >= 0, "train.samples_every must be non-negative")


@dataclass(frozen=True)
class QualityConfig:
    """Sample quality of a finished run (engine/quality.py, docs/QUALITY.md): whole
    trajectories composed from window scores, compared with the test split."""

    section: ClassVar[str] = "quality"

    enabled: bool  # assess each finished run
    trajectories: int  # trajectories generated
    length: int  # states per generated trajectory (≥ model.window: composed from windows)
    steps: int  # sampler steps (spec §3: 256 for whole trajectories)
    corrections: int  # Langevin corrections per step (spec §3: 1)
    tau: float  # corrector step size (spec §3: 0.5)
    t_start: float = 1.0  # the sampler starts at this t from N(0, σ(t)²) (SDA: 1)
    remove_mean: bool = False  # the exact ε̂ on each field's spatial mean (SDA: no)

    def __post_init__(self) -> None:
        for key in ("trajectories", "length", "steps"):
            _require(getattr(self, key) > 0, f"quality.{key} must be positive")
        _require(self.corrections >= 0, "quality.corrections must be non-negative")
        _require(self.tau > 0, "quality.tau must be positive")
        _require(0 < self.t_start <= 1, f"quality.t_start must be in (0, 1], got {self.t_start}")

    def sampler(self) -> dict[str, Any]:
        """The settings that make a set of samples (stored with every score)."""
        return {key: getattr(self, key) for key in
                ("steps", "corrections", "tau", "t_start", "remove_mean")}


Section = DataConfig | ModelConfig | TrainConfig | QualityConfig
SECTIONS: tuple[type[Section], ...] = (DataConfig, ModelConfig, TrainConfig, QualityConfig)


@dataclass(frozen=True)
class OptimizerDefaults:
    """An optimizer's best settings: peak lr (Prodigy: multiplier of its estimate) and decay."""

    lr: float
    weight_decay: float

    def __post_init__(self) -> None:
        for problem in (lr_problem(self.lr), weight_decay_problem(self.weight_decay)):
            _require(problem is None, str(problem))


def _parse_optimizers(table: object) -> Mapping[str, OptimizerDefaults]:
    """`[optimizers.NAME]` tables, each with exactly lr and weight_decay: an optimizer's best
    settings for this preset. An optimizer without one (one added after the preset was
    written) is trained with an lr and wd given explicitly."""
    if not isinstance(table, Mapping):
        raise PresetError("missing section [optimizers]")
    for name in table:
        _require(name in OPTIMIZERS, f"unknown optimizer [optimizers.{name}]; known: "
                 f"{', '.join(OPTIMIZERS)}")
    keys = [f.name for f in dataclasses.fields(OptimizerDefaults)]
    parsed = {}
    for name in (n for n in OPTIMIZERS if n in table):
        entry = table[name]
        _require(isinstance(entry, Mapping), f"[optimizers.{name}] must be a table")
        for key in entry:
            _require(key in keys, f"unknown key optimizers.{name}.{key}")
        for key in keys:
            _require(key in entry, f"missing key optimizers.{name}.{key}")
        values = {key: _coerce(f"optimizers.{name}.{key}", entry[key], float) for key in keys}
        try:
            parsed[name] = OptimizerDefaults(**values)
        except PresetError as error:
            raise PresetError(f"optimizers.{name}.{error}") from None
    return MappingProxyType(parsed)


@dataclass(frozen=True)
class Preset:
    """A named, complete recipe: data, model, training and the sample-quality assessment."""

    name: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    quality: QualityConfig
    optimizers: Mapping[str, OptimizerDefaults]  # best lr and weight decay per optimizer

    def __post_init__(self) -> None:
        _require(self.model.window <= self.data.kept,
                 f"model.window ({self.model.window}) exceeds the {self.data.kept} kept states "
                 "(data.transitions - data.burn_in)")
        _require(not self.quality.enabled or self.quality.length >= self.model.window,
                 f"quality.length ({self.quality.length}) must be at least model.window "
                 f"({self.model.window}): trajectories are composed from windows")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML-ready form; `Preset.from_dict` inverts it."""
        out: dict[str, Any] = {"name": self.name}
        for cls in SECTIONS:
            values = dataclasses.asdict(getattr(self, cls.section))
            out[cls.section] = {k: list(v) if isinstance(v, tuple) else v
                                for k, v in values.items()}
        out["optimizers"] = {name: dataclasses.asdict(defaults)
                             for name, defaults in self.optimizers.items()}
        return out

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], name: str | None = None) -> Preset:
        """Validate a `{"data": …, "model": …, "train": …}` table (a `name` key is optional)."""
        name = name if name is not None else str(table.get("name", "unnamed"))
        try:
            for section in table:
                _require(section in ("name", "optimizers")
                         or section in (s.section for s in SECTIONS),
                         f"unknown section [{section}]")
            sections = {s.section: parse_section(s, table.get(s.section)) for s in SECTIONS}
            optimizers = _parse_optimizers(table.get("optimizers"))
            return cls(name=name, **sections, optimizers=optimizers)
        except PresetError as error:
            raise PresetError(f"preset {name!r}: {error}") from None


def parse_section(cls: type[Section], table: object) -> Section:
    """Check keys and types of one TOML table, then let the dataclass check values."""
    if not isinstance(table, Mapping):
        raise PresetError(f"missing section [{cls.section}]")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    for key in table:
        _require(key in names, f"unknown key {cls.section}.{key}")
    for f in fields:  # keys added later have defaults: stored presets without them still load
        _require(f.name in table or f.default is not dataclasses.MISSING,
                 f"missing key {cls.section}.{f.name}")
    return cls(**{key: _coerce(f"{cls.section}.{key}", table[key], hints[key])
                  for key in names if key in table})


def _coerce(key: str, value: object, kind: object) -> object:
    """`value` as `kind` (bool, int, float, or a tuple of int or float); ints are accepted as
    floats."""
    if kind is bool:
        _require(isinstance(value, bool), f"{key} must be true or false, got {value!r}")
        return value
    if typing.get_origin(kind) is tuple:
        (item, _) = typing.get_args(kind)
        if not isinstance(value, list | tuple):
            raise PresetError(f"{key} must be a list, got {value!r}")
        return tuple(_coerce(key, v, item) for v in value)
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind is int:
        _require(is_int, f"{key} must be an integer, got {value!r}")
        return value
    if not (is_int or isinstance(value, float)):
        raise PresetError(f"{key} must be a number, got {value!r}")
    return float(value)


def available_presets() -> list[str]:
    """Names of the presets shipped in `diffbench.presets`."""
    files = resources.files("diffbench.presets").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped preset by name (`"paper"`), or any preset file by path."""
    source = str(name_or_path)
    if isinstance(name_or_path, Path) or source.endswith(".toml") or "/" in source:
        path = Path(name_or_path)
        _require(path.is_file(), f"preset file {str(path)!r} does not exist")
        name, text = path.stem, path.read_text()
    else:
        names = available_presets()
        _require(source in names, f"unknown preset {source!r}; available: {', '.join(names)}")
        name, text = source, resources.files("diffbench.presets").joinpath(
            f"{source}.toml").read_text()
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise PresetError(f"preset {name!r}: invalid TOML: {error}") from None
    return Preset.from_dict(table, name=name)


def dataset_name(preset: Preset) -> str:
    """The file stem of ``preset``'s data set, one rule for every command: the shipped
    preset's name when the data recipe is that preset's own (``tiny``), else the name and
    8 hex digits of the recipe's hash (``tiny-3f9a0c1e``). So one recipe is one file,
    however it was asked for (``data generate --trajectories``, ``--set data.…``, a preset
    file), and a changed recipe never meets an old file of the same name."""
    recipe = preset.to_dict()["data"]
    if preset.name in available_presets() and load_preset(preset.name).to_dict()["data"] \
            == recipe:
        return preset.name
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"{preset.name}-{digest[:8]}"


def override(preset: Preset, changes: Mapping[str, object]) -> Preset:
    """`preset` with dotted keys replaced, e.g. `{"data.trajectories": 64}` or
    `{"optimizers.adamw.lr": 1e-3}`, re-validated."""
    table = preset.to_dict()
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        parent: Any = table
        for part in path:
            parent = parent.get(part) if isinstance(parent, dict) else None
        _require(bool(path) and isinstance(parent, dict) and key in parent,
                 f"preset {preset.name!r}: unknown key {dotted}")
        parent[key] = value
    return Preset.from_dict(table, name=preset.name)
