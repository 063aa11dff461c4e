"""The training step, rung by rung: each speed-up against today's step, measured side by side.

Every rung adds one change to the rung above it, and all of them train the same U-Net (same
initial weights, batches and noise) with AdamW in one process:

    today           the step as it was: torch's circular padding, autograd ChannelNorm, NCHW,
                    index tensors copied to the device every step
    no-sync         the window sampler's indices on the device (no host synchronisation)
    pad             circular padding with its hand-written backward (engine/layers.py)
    norm            ChannelNorm with its closed-form backward
    channels_last   NHWC end to end
    compile         torch.compile of model + loss (noise drawn outside)
    graph           (CUDA) its forward and backward replayed as CUDA graphs ("reduce-overhead")
    bf16            bf16 autocast on top

Rounds are round-robin (today, no-sync, …, today, no-sync, …): each rung is reported as the
median over rounds of its step time divided into today's step time of the same round, so drift
of the machine (clocks, other load) falls on every rung alike. Per rung also: model FLOP
utilisation (CUDA, against the dense peak of its precision), ops per step (the aten ops that
reach a kernel, counted by a dispatch mode; inductor's fused kernels are not seen by it, so
compiled rungs show "-"), host synchronisations per step (CUDA, torch's sync debug mode), peak
memory (CUDA) and the largest parameter difference from today's rung after `--parity-steps`
steps (0 and "=" when bit-identical).

`--per-gpu N` adds a row: N processes each training the fastest rung for `--seconds`, their
summed throughput against one process alone (on a GPU under CUDA MPS when it runs).

    python benchmarks/speed_ladder.py                           # CPU: tiny, then paper
    python benchmarks/speed_ladder.py --preset paper --rounds 5 --rungs channels-last compile
    python benchmarks/speed_ladder.py --preset paper --device cuda --per-gpu 4
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from step_time import peak, step_flops  # benchmarks/ is on the path when this script runs
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from diffbench.engine.config import Preset, load_preset
from diffbench.engine.diffusion import draw_noise, noise_loss
from diffbench.engine.layers import CircularConv2d
from diffbench.engine.optimizers import build_optimizer
from diffbench.engine.unet import ChannelNorm, build_model
from diffbench.engine.windows import WindowSampler
from diffbench.tui.runner.mps import mps_daemon


@dataclass(frozen=True)
class Rung:
    """One configuration of the step; each rung of the ladder changes one field."""

    name: str
    sync_free: bool = False
    pad: bool = False
    norm: bool = False
    channels_last: bool = False
    compile: bool = False
    graph: bool = False
    bf16: bool = False


NAMES = {"sync_free": "no-sync", "pad": "pad", "norm": "norm",
         "channels_last": "channels-last", "compile": "compile", "graph": "graph",
         "bf16": "bf16"}


def ladder(device: torch.device, names: list[str] | None = None) -> list[Rung]:
    """Today's step and each rung above it; ``names`` keeps today's and those named (each
    still with every change below it). The graph rung only where there are CUDA graphs."""
    rungs = [Rung("today")]
    for change, name in NAMES.items():
        if change == "graph" and device.type != "cuda":
            continue
        rungs.append(dataclasses.replace(rungs[-1], name=name, **{change: True}))
    return [r for r in rungs if names is None or r.name in ("today", *names)]


# ----------------------------------------------------------------------------- today's layers


class AutogradChannelNorm(nn.Module):
    """ChannelNorm as it was: the formula, differentiated by autograd."""

    def forward(self, x: Tensor) -> Tensor:
        variance, mean = torch.var_mean(x, dim=-3, keepdim=True)
        return (x - mean) / (variance + 1e-5).sqrt()


def swap_layers(model: nn.Module, pad: bool, norm: bool) -> nn.Module:
    """``model`` with torch's circular padding (unless ``pad``) and autograd ChannelNorm
    (unless ``norm``), same weights."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, CircularConv2d) and not pad:
                plain = nn.Conv2d(child.in_channels, child.out_channels, 3, stride=child.stride,
                                  padding=1, padding_mode="circular")
                plain.load_state_dict(child.state_dict())
                setattr(module, name, plain)
            elif isinstance(child, ChannelNorm) and not norm:
                setattr(module, name, AutogradChannelNorm())
    return model


# ----------------------------------------------------------------------------- one rung's step


class Step:
    """A rung's model, optimizer, batches and noise; `()` takes one training step."""

    def __init__(self, rung: Rung, preset: Preset, device: torch.device, template: nn.Module,
                 data: Tensor) -> None:
        self.rung, self.device = rung, device
        self.model = swap_layers(copy.deepcopy(template), rung.pad, rung.norm).to(device)
        if rung.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(self.model, "adamw", 4.5e-4, 1e-2)
        self.params = list(self.model.parameters())
        self.sampler = WindowSampler(data, preset.train.batch_size, window=preset.model.window,
                                     seed=1)
        self.noise = torch.Generator(device).manual_seed(2)
        self.loss: Callable[[Tensor, Tensor, Tensor], Tensor] = (
            lambda x, t, eps: noise_loss(self.model, x, t, eps))
        if rung.compile:
            self.loss = torch.compile(self.loss, fullgraph=True, dynamic=False,
                                      mode="reduce-overhead" if rung.graph else None)
        self.batches = iter(())

    def batch(self) -> Tensor:
        x = next(self.batches, None)
        if x is None:
            self.batches = iter(self.sampler)
            x = next(self.batches)
        if not self.rung.sync_free and self.device.type == "cuda":
            for _ in range(2):  # today's sampler: two index tensors copied from pageable memory
                torch.empty(len(x), dtype=torch.long).to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.rung.channels_last else x

    def __call__(self) -> None:
        x = self.batch()
        t, eps = draw_noise(x, self.noise)
        self.optimizer.zero_grad(set_to_none=True)
        if self.rung.graph:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.rung.bf16):
            loss = self.loss(x, t, eps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step: Step, steps: int) -> float:
    """Seconds per step over ``steps`` steps."""
    synchronize(step.device)
    began = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(step.device)
    return (time.perf_counter() - began) / steps


class OpCounter(TorchDispatchMode):
    """Counts the aten ops that reach a kernel (below autograd, so backward ops included)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func not in (torch.ops.aten.detach.default, torch.ops.aten.view.default):
            self.count += 1
        return func(*args, **(kwargs or {}))


def ops_per_step(step: Step) -> int | None:
    if step.rung.compile:
        return None
    with OpCounter() as counter:
        step()
    return counter.count


def syncs_per_step(step: Step, steps: int = 5) -> float | None:
    if step.device.type != "cuda":
        return None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / steps


def parameters_after(step: Step, steps: int) -> list[Tensor]:
    for _ in range(steps):
        step()
    return [p.detach().float().cpu() for p in step.params]


# ----------------------------------------------------------------------------- several per GPU


def throughput(preset_name: str, device: str, rung: Rung, seconds: float, processes: int) -> float:
    """Steps per second summed over ``processes`` processes each training ``rung``, on one
    GPU under the CUDA MPS daemon `diffbench worker --per-gpu` would start (when there is
    one)."""
    command = [sys.executable, __file__, "--preset", preset_name, "--device", device,
               "--worker", json.dumps(dataclasses.asdict(rung)), "--seconds", str(seconds)]
    shared = processes > 1 and device.startswith("cuda")
    with tempfile.TemporaryDirectory() as root, mps_daemon(Path(root), shared) as mps:
        children = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **mps}) for _ in range(processes)]
        return sum(float(child.communicate()[0].split()[-1]) for child in children)


def worker(preset: Preset, device: torch.device, rung: Rung, seconds: float) -> None:
    """Train ``rung`` for ``seconds`` after warm-up; print steps per second."""
    step = Step(rung, preset, device, build_model(preset.model), synthetic(preset, device))
    for _ in range(3):
        step()
    synchronize(device)
    began, steps = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        step()
        steps += 1
    synchronize(device)
    print(steps / (time.perf_counter() - began))


# ----------------------------------------------------------------------------- the table


def synthetic(preset: Preset, device: torch.device, batches: int = 4) -> Tensor:
    """Random trajectories (N, window, 2, H, W) on ``device``: ``batches`` full batches."""
    generator = torch.Generator().manual_seed(0)
    n, window = preset.data.resolution, preset.model.window
    return torch.randn(batches * preset.train.batch_size, window, 2, n, n,
                       generator=generator).to(device)


def run(preset_name: str, device: torch.device, rungs: list[Rung], rounds: int, steps: int,
        parity_steps: int, per_gpu: int, seconds: float) -> None:
    preset = load_preset(preset_name)
    torch.manual_seed(0)
    template = build_model(preset.model)
    data = synthetic(preset, device)
    flops = step_flops(preset, device) if device.type == "cuda" else None
    print(f"\n{preset_name}: batch {preset.train.batch_size}, {preset.data.resolution}², "
          f"{device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}"
          f", {torch.get_num_threads()} threads); {rounds} rounds of {steps} steps per rung",
          flush=True)

    steps_of = {r.name: Step(r, preset, device, template, data) for r in rungs}
    compile_s = {}
    for name, step in steps_of.items():  # warm-up: autotuning, compilation
        began = time.perf_counter()
        step()
        synchronize(device)
        compile_s[name] = time.perf_counter() - began
        step()
    reference = None
    parity = {}
    for rung in rungs:  # fresh copies, same start: parameters after parity_steps steps
        fresh = Step(rung, preset, device, template, data)
        params = parameters_after(fresh, parity_steps)
        reference = reference or params
        parity[rung.name] = max((a - b).abs().max().item() for a, b in zip(params, reference,
                                                                           strict=True))
    counts = {name: ops_per_step(step) for name, step in steps_of.items()}
    syncs = {name: syncs_per_step(step) for name, step in steps_of.items()}
    memory = {}
    seconds_of: dict[str, list[float]] = {name: [] for name in steps_of}
    for _ in range(rounds):
        for name, step in steps_of.items():
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            seconds_of[name].append(timed(step, steps))
            if device.type == "cuda":
                memory[name] = torch.cuda.max_memory_allocated(device) / 2**30

    print(f"{'rung':<14} {'ms/step':>9} {'×today':>7} {'spread':>13} {'MFU':>6} {'ops':>6} "
          f"{'syncs':>5} {'GiB':>5} {'first s':>7} {'max |Δp|':>9}")
    today = seconds_of["today"]
    for rung in rungs:
        mine = seconds_of[rung.name]
        ratios = [a / b for a, b in zip(today, mine, strict=True)]
        top = peak(device, "bf16" if rung.bf16 else "fp32")
        mfu = (f"{flops / statistics.median(mine) / (top * 1e12):6.1%}" if flops and top
               else f"{'-':>6}")
        ops = counts[rung.name]
        print(f"{rung.name:<14} {1e3 * statistics.median(mine):9.1f} "
              f"{statistics.median(ratios):7.3f} {min(ratios):6.3f}–{max(ratios):6.3f} {mfu} "
              f"{ops if ops is not None else '-':>6} "
              f"{syncs[rung.name] if syncs[rung.name] is not None else '-':>5} "
              f"{memory.get(rung.name, float('nan')):5.2f} {compile_s[rung.name]:7.1f} "
              f"{parity[rung.name]:9.2e}{' =' if parity[rung.name] == 0 else ''}", flush=True)
    if per_gpu > 1:
        best = min(rungs, key=lambda r: statistics.median(seconds_of[r.name]))
        one = throughput(preset_name, str(device), best, seconds, 1)
        many = throughput(preset_name, str(device), best, seconds, per_gpu)
        print(f"{per_gpu} per device ({best.name}): {many:.2f} steps/s against {one:.2f} for "
              f"one process: ×{many / one:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--preset", nargs="+", default=["paper"] if cuda else ["tiny", "paper"])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per rung per round (default: 20 CUDA, tiny 20, else 1)")
    parser.add_argument("--parity-steps", type=int, default=None,
                        help="steps before the parameters are compared (default: 20, CPU paper 2)")
    parser.add_argument("--rungs", nargs="+", choices=list(NAMES.values()),
                        help="time only these rungs against today's (default: all)")
    parser.add_argument("--per-gpu", type=int, default=1,
                        help="also time N processes on the device against one")
    parser.add_argument("--seconds", type=float, default=30.0,
                        help="how long each process of the --per-gpu row trains")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.worker:
        worker(load_preset(args.preset[0]), device, Rung(**json.loads(args.worker)),
               args.seconds)
        return
    print(f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    for name in args.preset:
        small = device.type == "cuda" or name == "tiny"
        run(name, device, ladder(device, args.rungs), args.rounds,
            args.steps or (20 if small else 1), args.parity_steps or (20 if small else 2),
            args.per_gpu, args.seconds)


if __name__ == "__main__":
    main()
