"""CUDA MPS for several workers on one GPU (`diffbench worker --gpus 0,0` or `--per-gpu N`).

Without MPS, processes on one GPU take turns (time-slicing): each gets the whole GPU for a
slice, so runs too small to fill it leave it partly idle. An MPS server runs their kernels
side by side. diffbench starts its own control daemon with its pipes and logs in the
workspace (``<home>/mps/pipe``, ``<home>/mps/log``), so it needs no root and no system
service, and quits it when the workers are done. A daemon that already answers on those
pipes (another `diffbench worker` on this workspace started it) is used and left running.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"
TIMEOUT_S = 30.0  # a control command answers at once; a hung one must not hang the supervisor


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@contextmanager
def mps_daemon(root: Path, enabled: bool,
               log: Callable[[str], None] = _stderr) -> Iterator[dict[str, str]]:
    """Run an MPS control daemon for the ``with`` block; yield the variables that point the
    workers' CUDA at it (none when ``enabled`` is false, the binary is missing or the daemon
    does not start: the workers then share the GPU by time-slicing)."""
    if not enabled:
        yield {}
        return
    control = shutil.which(CONTROL)
    if control is None:
        log(f"{CONTROL} is not on PATH: workers on one GPU share it by time-slicing")
        yield {}
        return
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(root / "mps" / "pipe"),
           "CUDA_MPS_LOG_DIRECTORY": str(root / "mps" / "log")}
    for folder in env.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    # A daemon started under CUDA_VISIBLE_DEVICES renumbers the GPUs its clients see; without
    # it every worker's CUDA_VISIBLE_DEVICES names the same GPU as it would without MPS.
    daemon_env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | env
    pipe = env["CUDA_MPS_PIPE_DIRECTORY"]
    if _control(control, daemon_env, stdin="get_server_list\n") == 0:
        log(f"MPS: using the control daemon already running on {pipe}")
        yield env
        return
    code = _control(control, daemon_env, "-d")
    if code != 0:
        log(f"MPS: {CONTROL} -d: {_failure(code)} (see {env['CUDA_MPS_LOG_DIRECTORY']}); "
            "workers on one GPU share it by time-slicing")
        yield {}
        return
    log(f"MPS: started a control daemon on {pipe}")
    try:
        yield env
    finally:
        code = _control(control, daemon_env, stdin="quit\n")
        if code != 0:
            log(f"MPS: quit of the control daemon on {pipe}: {_failure(code)}; see it with: "
                f"echo get_server_list | CUDA_MPS_PIPE_DIRECTORY={pipe} {CONTROL}")


def _control(control: str, env: dict[str, str], *args: str, stdin: str = "") -> int | None:
    """``control args`` fed ``stdin``: its exit code, None when it did not finish in time.

    Output goes nowhere: the daemon that ``-d`` forks keeps any pipe given to it open, which
    would make reading its output wait forever."""
    try:
        return subprocess.run([control, *args], input=stdin, text=True, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        return None


def _failure(code: int | None) -> str:
    return f"no answer in {TIMEOUT_S:g} s" if code is None else f"exit {code}"
