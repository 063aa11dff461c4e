"""The data set a run needs: one file per data recipe in the workspace, generated once.

Several workers may need the same missing file at once; one generates it under
``<file>.lock`` (fcntl) while the others wait and then load it. A ``stop`` callable (a
worker's signal) ends either promptly with `engine.dataset.GenerationStopped`: the generating
one keeps its finished chunks in ``<file>.partial`` for whoever generates next, a waiting one
stops waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


LOCK_POLL_S = 0.2  # how often a worker waiting for another's data set looks at ``stop``


def ensure_dataset(preset: Any, path: Path, device: str, progress: Any = None, *,
                   stop: Callable[[], bool] | None = None) -> None:
    """Generate ``path`` unless it exists, holding ``<path>.lock`` (fcntl) meanwhile, so of
    several workers one generates and the rest wait and then load it (``progress`` and
    ``stop``: as `generate_dataset` takes them; a waiting worker also polls ``stop``)."""
    import fcntl

    from diffbench.engine.dataset import (
        GenerationStopped,
        compile_pays_off,
        generate_dataset,
    )
    from diffbench.engine.device import resolve_device

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        while True:  # not a blocking flock: a signal must end the wait too
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop is not None and stop():
                    raise GenerationStopped(f"stopped waiting for {path}, which another "
                                            "process is generating") from None
                time.sleep(LOCK_POLL_S)
        try:
            if path.exists():
                return
            torch_device = resolve_device(device)
            from .worker import log

            log(f"data set {path} is missing; generating it "
                 f"({preset.data.trajectories} trajectories)")
            generate_dataset(preset, path, device=torch_device,
                             compile=compile_pays_off(preset.data, torch_device),
                             progress=progress, stop=stop)
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
