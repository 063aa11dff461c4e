"""Every random number generator a run touches, captured and restored as one dict.

The trainer draws from its own generators (the window sampler's, the diffusion noise's, the
validation noise's), never from the global ones; the global states (torch CPU and CUDA,
NumPy, Python) are saved anyway, so a library that draws from them behind our back cannot
break an exact resume.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def global_state() -> dict[str, Any]:
    """The global generators: torch CPU, every CUDA device (when initialised), NumPy, Python."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    """NumPy's legacy global state as tensors and numbers (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    assert kind == "MT19937"
    return {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def set_global_state(state: dict[str, Any]) -> None:
    """Restore what `global_state` captured (CUDA only when both sides have it)."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_globals(seed: int) -> None:
    """Seed the global generators (torch on every device, NumPy, Python) from one seed."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def seeded(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh generator on ``device`` (CUDA generators live on the GPU)."""
    return torch.Generator(device=device).manual_seed(seed)


def generator_states(generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    return {name: g.get_state() for name, g in generators.items()}


def set_generator_states(generators: dict[str, torch.Generator],
                         states: dict[str, torch.Tensor]) -> None:
    missing = set(generators) - set(states)
    if missing:
        raise ValueError(f"checkpoint lacks generator states {sorted(missing)}")
    for name, generator in generators.items():
        generator.set_state(states[name])


def derive_seed(seed: int, stream: str) -> int:
    """Independent 63-bit seeds per purpose from one run seed (stable across versions)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
