"""``diffbench worker --gpus``/``--per-gpu``: one worker process per GPU slot.

The supervisor starts a `diffbench worker --device cuda` child per slot, each seeing only
its GPU (CUDA_VISIBLE_DEVICES); several children on one GPU share it through an MPS daemon
(`mps.py`) that lives as long as the supervisor. Signals are passed on to the children.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Callable

from diffbench.storage.workspace import Workspace

from ..errors import EXIT_INTERRUPTED, UserError, require
from .worker import log


def expand_gpus(gpus: str, *, per_gpu: int = 1, visible: str | None = None,
                device_count: Callable[[], int] | None = None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each worker to start: every GPU of ``gpus`` ('all', or
    indices such as ``0,1`` or ``0,0,0,0``) ``per_gpu`` times, in order. An index counts among
    ``visible`` (the supervisor's CUDA_VISIBLE_DEVICES) when that is set, as CUDA counts;
    'all' without it asks ``device_count`` (default: torch's). Raises `UserError`."""
    if gpus.strip() == "all":
        if visible is not None:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
        else:
            if device_count is None:
                import torch

                device_count = torch.cuda.device_count
            ids = [str(i) for i in range(device_count())]
        require(bool(ids), "--gpus all: no CUDA device is visible")
    else:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids or not all(g.isdecimal() for g in ids):
            raise UserError(f"--gpus takes 'all' or indices like 0,1 or 0,0,0,0, not {gpus!r}")
        ids = [str(int(g)) for g in ids]
        if visible is not None:
            shown = [v.strip() for v in visible.split(",") if v.strip()]
            if any(int(g) >= len(shown) for g in ids):
                raise UserError(f"--gpus {gpus}: CUDA_VISIBLE_DEVICES={visible} shows "
                                f"{len(shown)} device(s)")
            ids = [shown[int(g)] for g in ids]
    return [gpu for gpu in ids for _ in range(per_gpu)]


def describe_workers(ids: list[str], mps: bool) -> str:
    """The supervisor's log line, e.g. ``started 4 workers (GPU 0 ×4, MPS)``."""
    counts = Counter(ids)
    gpus = ", ".join(f"GPU {gpu} ×{n}" if n > 1 else f"GPU {gpu}" for gpu, n in counts.items())
    sharing = "" if max(counts.values()) == 1 else ", MPS" if mps else ", time-slicing"
    return f"started {len(ids)} worker{'s' if len(ids) != 1 else ''} ({gpus}{sharing})"


def worker_command(workspace: Workspace, db_url: str | None, *options: str) -> list[str]:
    """The command line of a `diffbench worker` child: this interpreter, this workspace and
    database (``db_url``; None: the child resolves it as this process did), ``options``."""
    args = [sys.executable, "-c", "from diffbench.tui.cli import main; main()",
            "--home", str(workspace.root), "worker"]
    return [*args, *(["--db", db_url] if db_url else []), *options]


def spawn_per_gpu(ids: list[str], workspace: Workspace, db_url: str | None,
                   max_runs: int | None, idle_exit: float | None, lease: float,
                   threads: int | None) -> int:
    """One `diffbench worker --device cuda` child per entry of ``ids``, with
    CUDA_VISIBLE_DEVICES set to it; several on one GPU share it through an MPS daemon that
    lives as long as this supervisor (`mps.py`). Signals are passed on; the exit code is
    the worst child's."""
    from .mps import mps_daemon

    args = worker_command(workspace, db_url, "--device", "cuda", "--lease", str(lease))
    if max_runs is not None:
        args += ["--max-runs", str(max_runs)]
    if idle_exit is not None:
        args += ["--idle-exit", str(idle_exit)]
    if threads is not None:
        args += ["--threads", str(threads)]
    children: list[subprocess.Popen] = []
    got: list[int] = []

    def forward(signum: int, frame: object) -> None:
        got.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT):  # before the daemon starts, so it is stopped
        signal.signal(s, forward)
    shared = len(set(ids)) < len(ids)
    with mps_daemon(workspace.root, enabled=shared, log=log) as mps_env:
        for gpu in ids:
            if got:  # stopped while starting: start no more
                break
            children.append(subprocess.Popen(
                args, env={**os.environ, **mps_env, "CUDA_VISIBLE_DEVICES": gpu}))
        if children:
            log(describe_workers(ids[:len(children)], mps=bool(mps_env)))
        codes = [child.wait() for child in children]
    if signal.SIGINT in got:
        return EXIT_INTERRUPTED
    return max(codes, key=lambda c: (c != 0, abs(c)), default=0)
