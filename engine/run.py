"""What one training run is: the resolved run config, its data, and its provenance.

`RunConfig` is everything that decides a run's numbers (preset, optimizer and its settings,
schedule, seed, precision, determinism) plus where it runs; it round-trips through JSON
(`to_dict`/`from_dict`) so a run folder or a job row can rebuild it exactly.
"""

from __future__ import annotations

import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import Preset, QualityConfig
from .optimizers import optimizer_options
from .vocabulary import (
    OPTIMIZERS,
    PRECISIONS,
    SCHEDULES,
    lr_problem,
    unknown,
    weight_decay_problem,
)


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
    precision: str = "fp32"
    deterministic: bool = False
    channels_last: bool = True
    compile: bool | None = None
    cuda_graph: bool = False
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


@dataclass(frozen=True)
class TrainingData:
    """The train and valid splits as float32 CPU tensors ``(n, T, 2, H, W)``."""

    train: Tensor
    valid: Tensor
    source: str = ""  # file path, for provenance
    checksum: str = ""

    @classmethod
    def load(cls, path: Path, preset: Preset) -> TrainingData:
        """Read a data set file, which must hold ``preset``'s data recipe (`DatasetError`)."""
        from .dataset import DatasetError, load_split, open_dataset

        info = open_dataset(path)
        if info.preset.get("data") != preset.to_dict()["data"]:
            raise DatasetError(f"{path} holds data of another recipe than preset "
                               f"{preset.name!r}'s [data]")
        return cls(train=torch.from_numpy(load_split(path, "train")),
                   valid=torch.from_numpy(load_split(path, "valid")),
                   source=str(Path(path).absolute()), checksum=str(info.attrs["checksum"]))


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


def git_state() -> dict[str, Any]:
    """The commit of the source tree diffbench runs from (editable installs) and whether it
    has uncommitted changes; both None outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                                    cwd=Path(__file__).resolve().parent)
        except (OSError, subprocess.SubprocessError):
            return None
        return result.stdout if result.returncode == 0 else None

    commit, status = git("rev-parse", "HEAD"), git("status", "--porcelain")
    return {"git_commit": commit.strip() if commit else None,
            "git_dirty": None if commit is None or status is None else bool(status.strip())}


def provenance(config: RunConfig, device: torch.device, model: torch.nn.Module,
               implementation: str, data: TrainingData | None = None) -> dict[str, Any]:
    """What produced the numbers: code, library versions, hardware, model size."""
    info: dict[str, Any] = {
        "diffbench": _version("diffbench"), **git_state(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "python": platform.python_version(),
        "platform": platform.platform(), "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "threads": torch.get_num_threads(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "optimizer_implementation": implementation,
        "packages": {p: _version(p) for p in ("schedulefree", "prodigyopt", "pytorch_optimizer")},
    }
    if data is not None:
        info["data"] = {"path": data.source, "checksum": data.checksum}
    return info
