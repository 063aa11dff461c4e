"""How a step runs on its device, apart from what it computes: whether and how the loss is
compiled (`torch.compile`, CUDA graphs), the backend switches (TF32, determinism), and the
clocks a step is timed with (CUDA events, read a batch of steps at a time, or
`time.perf_counter` on a CPU). Measurements behind each choice: docs/PERFORMANCE.md.
"""

from __future__ import annotations

import os
import time
from itertools import pairwise
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .run_config import RunConfig


def event() -> torch.cuda.Event:
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def durations(marks: tuple) -> tuple[float, float, float]:
    """(data, compute, optimizer) milliseconds from four perf_counter values or CUDA events."""
    if isinstance(marks[0], float):
        return tuple(1e3 * (b - a) for a, b in pairwise(marks))
    return tuple(a.elapsed_time(b) for a, b in pairwise(marks))


def compile_pays_off(device: torch.device, model: torch.nn.Module, steps: int) -> bool:
    """Whether `torch.compile` repays its compilation in a run of ``steps`` steps.

    Measured (docs/PERFORMANCE.md): on CUDA the eager step is launch-bound, so always. On
    2 CPU cores a compiled `paper` step is ≈ 1.2× faster than eager (2.3 s saved per step)
    and the compilation costs 1–2 minutes: it pays for U-Nets of a million parameters and more
    over 1,000 steps (`small`, `paper`), not for `tiny` (≈ 10 ms saved per step against
    ≈ 50 s to compile).
    """
    if device.type == "cuda":
        return True
    return sum(p.numel() for p in model.parameters()) >= 1_000_000 and steps >= 1_000


def compile_loss(loss, graphs: bool = False):
    """torch.compile of the model's loss: one graph, static shapes (the last, smaller batch
    of an epoch is a second graph), its forward and backward replayed as CUDA graphs when
    ``graphs`` (torch's "reduce-overhead": each step begins with
    `torch.compiler.cudagraph_mark_step_begin`). Inductor's on-disk cache makes a later run
    of the same shapes, in this process or another, load its kernels instead of compiling
    them again."""
    return torch.compile(loss, fullgraph=True, dynamic=False,
                         mode="reduce-overhead" if graphs else None)


def configure_backends(device: torch.device, config: RunConfig) -> None:
    """TF32 for fp32 on CUDA (the spec allows it); the determinism switch."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = not config.deterministic
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(config.deterministic)


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast on ``device`` when the run's precision is bf16 (fp32: a no-op)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def sync_time(device: torch.device) -> float:
    """`time.perf_counter` after the device has finished its work (what phases are timed by)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
