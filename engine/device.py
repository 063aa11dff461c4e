"""Turn a user's device string into a `torch.device`, failing early with one clear line."""

from __future__ import annotations

import re

import torch


class DeviceError(ValueError):
    """A device that does not exist on this machine or is not understood."""


def resolve_device(spec: str = "auto") -> torch.device:
    """`"auto"` (CUDA when present, else CPU), `"cpu"`, `"cuda"` or `"cuda:N"`."""
    if spec == "auto":
        return resolve_device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if match is None:
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested but CUDA is not available on this machine")
    count = torch.cuda.device_count()
    index = int(match.group(1) or 0)
    if index >= count:
        raise DeviceError(f"device {spec!r} does not exist: this machine has {count} CUDA "
                          f"device{'s' if count != 1 else ''} (cuda:0 … cuda:{count - 1})")
    return torch.device("cuda", index)
