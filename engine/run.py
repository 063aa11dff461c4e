"""A training run's data and provenance (its settings: `run_config.RunConfig`)."""

from __future__ import annotations

import platform
import subprocess
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .config import Preset
from .run_config import RunConfig


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
