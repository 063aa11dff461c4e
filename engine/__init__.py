"""The science: Kolmogorov-flow data, the score U-Net, diffusion, optimizers, schedules, training.

The engine never imports `diffbench.storage` or `diffbench.tui`. The names below are loaded
on first use, so `import diffbench.engine.config` stays free of torch.

    from diffbench.engine import load_preset, build_model, build_optimizer, lr_multiplier
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "load_preset": "config",
    "build_model": "unet",
    "build_optimizer": "optimizers",
    "lr_multiplier": "schedules",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
