"""What one training run is: everything that decides its numbers (preset, optimizer and its
settings, schedule, seed, precision, determinism) plus where it runs. Torch-free, so the
study planner resolves and stores a run without loading torch; it round-trips through JSON
(`to_dict`/`from_dict`) so a run folder or a job row can rebuild it exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .config import Preset, QualityConfig
from .vocabulary import (
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    lr_problem,
    unknown,
    weight_decay_problem,
)

SWITCH = (True, False)


class RunError(ValueError):
    """A run setting out of range or unknown; the message names it."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise RunError(message)


@dataclass(frozen=True)
class RunConfig:
    """One training run. ``options`` are optimizer options (`optimizer_options(name)`).

    ``channels_last``, ``compile`` and ``cuda_graph`` decide how a step is computed, not what
    it computes (results move in the last bits): NHWC convolutions are faster on CPUs and GPUs
    alike; ``compile`` None compiles where it pays (`engine.training.compile_pays_off`);
    ``cuda_graph`` replays the compiled forward and backward as CUDA graphs (torch.compile's
    "reduce-overhead" mode; a no-op on the CPU), off until measured on a GPU.
    """

    preset: Preset
    optimizer: str
    lr: float
    weight_decay: float
    schedule: str = "linear"
    seed: int = 0
    device: str = "auto"
    precision: str = field(default="fp32", metadata={"choices": PRECISIONS})
    deterministic: bool = field(default=False, metadata={"choices": SWITCH})
    channels_last: bool = field(default=True, metadata={"choices": SWITCH})
    compile: bool | None = field(default=None, metadata={"choices": SWITCH})
    cuda_graph: bool = field(default=False, metadata={"choices": SWITCH})
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for problem in (unknown("optimizer", self.optimizer, OPTIMIZERS),
                        unknown("schedule", self.schedule, SCHEDULES),
                        unknown("precision", self.precision, PRECISIONS),
                        lr_problem(self.lr), weight_decay_problem(self.weight_decay)):
            _require(problem is None, str(problem))
        _require(0 <= self.seed < 2**63, f"seed must be in [0, 2**63), got {self.seed}")
        _require(not self.cuda_graph or self.compile is not False,
                 "cuda_graph replays the compiled step: it needs compile on")
        if not self.options:
            return
        from .optimizers import optimizer_options  # torch: only for runs with options

        known = optimizer_options(self.optimizer)
        for key in self.options:
            _require(key in known, f"unknown option {key!r} for optimizer {self.optimizer!r}; "
                     f"known: {', '.join(known) or 'none'}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; `from_dict` inverts it."""
        return {"preset": self.preset.to_dict(), "optimizer": self.optimizer, "lr": self.lr,
                "weight_decay": self.weight_decay, "schedule": self.schedule,
                "seed": self.seed, "device": self.device, "precision": self.precision,
                "deterministic": self.deterministic, "channels_last": self.channels_last,
                "compile": self.compile, "cuda_graph": self.cuda_graph,
                "options": {k: list(v) if isinstance(v, tuple) else v
                            for k, v in self.options.items()}}

    @classmethod
    def from_dict(cls, table: Mapping[str, Any]) -> RunConfig:
        """The inverse of `to_dict`. A run stored before presets had a ``[quality]`` section
        (a run folder or job row of diffbench ≤ 0.1 without it) resumes as it was asked:
        without the assessment (`UNASSESSED`)."""
        values = dict(table)
        preset = dict(values.pop("preset"))
        preset.setdefault(QualityConfig.section, UNASSESSED)
        return cls(preset=Preset.from_dict(preset), **values)

    @property
    def name(self) -> str:
        """A folder-friendly name: ``tiny-adamw-linear-lr0.00045-wd0.01-s0``."""
        return (f"{self.preset.name}-{self.optimizer}-{self.schedule}-lr{self.lr:g}"
                f"-wd{self.weight_decay:g}-s{self.seed}")


# The [quality] section of a run stored before the section existed: not assessed.
UNASSESSED: Mapping[str, Any] = {"enabled": False, "trajectories": 1, "length": 1, "steps": 1,
                                 "corrections": 0, "tau": 0.5}


def default_hyperparameters(preset: Preset, optimizer: str) -> tuple[float, float]:
    """(lr, weight decay) the preset gives ``optimizer`` (the paper's best settings)."""
    problem = unknown("optimizer", optimizer, OPTIMIZERS)
    _require(problem is None, str(problem))
    table = getattr(preset, "optimizers", None)
    _require(table is not None and optimizer in table,
             f"preset {preset.name!r} has no defaults for optimizer {optimizer!r}; "
             "give --lr and --wd")
    entry = table[optimizer]
    get = entry.get if isinstance(entry, Mapping) else lambda key: getattr(entry, key)
    return float(get("lr")), float(get("weight_decay"))


def run_settings() -> dict[str, tuple[Any, ...]]:
    """The run-level settings (how a step is computed, its precision) a queued run sets with
    an undotted ``--set`` key, and the values each takes: the `RunConfig` fields that declare
    ``choices``."""
    return {f.name: f.metadata["choices"] for f in fields(RunConfig) if "choices" in f.metadata}


def split_settings(sets: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``--set`` entries as (run settings, preset overrides); `RunError` for a run setting
    given a value it does not take."""
    known = run_settings()
    settings = {key: value for key, value in sets.items() if key in known}
    for key, value in settings.items():
        allowed = known[key]
        _require(value in allowed and type(value) in {type(v) for v in allowed},
                 f"--set {key} takes {' or '.join(str(v).lower() for v in allowed)}, "
                 f"got {value!r}")
    return settings, {key: value for key, value in sets.items() if key not in known}
