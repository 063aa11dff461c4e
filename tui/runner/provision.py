"""The data set a run needs: one file per data recipe in the workspace, generated once.

Several workers may need the same missing file at once; one generates it under
``<file>.lock`` (fcntl) while the others wait and then load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


def ensure_dataset(preset: Any, path: Path, device: str, progress: Any = None) -> None:
    """Generate ``path`` unless it exists, holding ``<path>.lock`` (fcntl) meanwhile, so of
    several workers one generates and the rest wait and then load it (``progress``: as
    `generate_dataset` takes it)."""
    import fcntl

    from diffbench.engine.dataset import compile_pays_off, generate_dataset
    from diffbench.engine.device import resolve_device

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                return
            torch_device = resolve_device(device)
            from .worker import log

            log(f"data set {path} is missing; generating it "
                 f"({preset.data.trajectories} trajectories)")
            generate_dataset(preset, path, device=torch_device,
                             compile=compile_pays_off(preset.data, torch_device),
                             progress=progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def provide_dataset(preset: Any, path: Path, device: str, console: Console) -> None:
    """`ensure_dataset` with a progress bar on ``console``, for the commands that train in
    the foreground (`train`, `demo`); nothing when the file is there."""
    from ..output import GenerationProgress

    if path.exists():
        return
    with GenerationProgress(console, preset.data.trajectories) as report:
        ensure_dataset(preset, path, device, progress=report)
