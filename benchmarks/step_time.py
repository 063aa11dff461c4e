"""Step time of each optimizer as a ratio to AdamW, measured by the trainer itself
(`diffbench.engine.step_timing`, which `diffbench calibrate` shares).

Each optimizer trains the preset's U-Net on random windows of the preset's shape (the data's
values do not change the time of a step) through `Trainer`, whose step records split every
step into data, forward+backward (with gradient norm and clipping) and optimizer step, timed
with CUDA events on a GPU. All optimizers train side by side, one epoch each in turn (A B C A B
C …), so that drift of the machine (clocks, other load) falls on all of them alike. The first
epoch of each is a warm-up (cuDNN autotuning, torch.compile, CUDA graph capture, first
preconditioners) and is left out. Per phase the median over the timed steps, and two honest
figures over all of them: the mean of forward+backward + optimizer (SOAP's eigenbasis refresh
every 10 steps included) and the wall-clock time per step (Python and launch gaps included).

On CUDA the model FLOPs of one step (forward + backward, counted by torch's FlopCounterMode;
the spec's figure is ≈ 2.4 TFLOP at batch 32 for `paper`) give the model FLOP utilisation
against the GPU's dense peak for the precision (TF32 for fp32, bf16 for bf16).

An optimizer is a name with options after a colon, one row each:

    python benchmarks/step_time.py                       # CPU: tiny and small, fp32
    python benchmarks/step_time.py --preset paper        # CUDA: paper in fp32 and bf16
    python benchmarks/step_time.py --preset paper --precision bf16 --epochs 8
    python benchmarks/step_time.py --optimizers adamw soap soap:implementation=pytorch_optimizer
    python benchmarks/step_time.py --optimizers adamw muon muon:cuda_graph=false \
        soap soap:compile=false,cuda_graph=false
"""

from __future__ import annotations

import argparse
import ast
import time
from typing import Any

import torch

from diffbench.engine.config import Preset, load_preset
from diffbench.engine.optimizers import OPTIMIZERS
from diffbench.engine.step_timing import interleaved
from diffbench.engine.unet import build_model

# Dense peak TFLOP/s (no sparsity) by (GPU name fragment, precision); first match wins.
PEAKS = [("H100 PCIe", {"fp32": 378.0, "bf16": 756.0}),
         ("H100", {"fp32": 494.7, "bf16": 989.4}),
         ("H200", {"fp32": 494.7, "bf16": 989.4}),
         ("A100", {"fp32": 156.0, "bf16": 312.0})]


def step_flops(preset: Preset, device: torch.device) -> float:
    """FLOPs of one forward + backward at the preset's batch size."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(preset.model).to(device)
    b, c, n = preset.train.batch_size, 2 * preset.model.window, preset.data.resolution
    x, t = torch.randn(b, c, n, n, device=device), torch.rand(b, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x, t).square().mean().backward()
    return float(counter.get_total_flops())


def peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((p[precision] for fragment, p in PEAKS if fragment in name), None)


def parse_row(spec: str) -> tuple[str, str, dict[str, Any]]:
    """`name[:key=value,…]` → (label, name, options); values are Python literals or
    true/false/none."""
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, equals, value = item.partition("=")
        if not equals:
            raise SystemExit(f"bad optimizer option {item!r} in {spec!r}: use key=value")
        words = {"true": True, "false": False, "none": None}
        if value.lower() in words:
            options[key] = words[value.lower()]
            continue
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    if name not in OPTIMIZERS:
        raise SystemExit(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return spec, name, options


def run(preset_name: str, device: str, precision: str, epochs: int, steps_per_epoch: int,
        rows: list[tuple[str, str, dict[str, Any]]]) -> None:
    preset = load_preset(preset_name)
    torch_device = torch.device("cuda" if device.startswith("cuda") else "cpu")
    flops = step_flops(preset, torch_device) if torch_device.type == "cuda" else None
    top = peak(torch_device, precision)
    print(f"\n{preset_name} ({preset.model.channels} × {preset.model.blocks} blocks, "
          f"{preset.data.resolution}², batch {preset.train.batch_size}), {precision}, "
          f"{torch.cuda.get_device_name(torch_device) if flops else 'CPU'}"
          + (f", {flops / 1e12:.2f} TFLOP per step (fwd+bwd)" if flops else "")
          + f"; {(epochs - 1) * steps_per_epoch} timed steps each")
    width = max(len(label) for label, _, _ in rows)
    print(f"{'optimizer':<{width}} {'data':>5} {'fwd+bwd':>7} {'opt':>6} {'mean':>6} {'wall':>6}  "
          f"{'×AdamW':>6} {'mean×':>6} {'wall×':>6}" + ("   MFU" if top else "")
          + "   (ms per step; medians, then means)")
    started = time.perf_counter()
    timings = interleaved(preset, rows, device, precision, epochs, steps_per_epoch)
    base = timings[0]
    for (label, _, _), m in zip(rows, timings, strict=True):
        ratio = (m.median("compute") + m.median("optimizer")) / (
            base.median("compute") + base.median("optimizer"))
        line = (f"{label:<{width}} {m.median('data'):5.2f} {m.median('compute'):7.2f} "
                f"{m.median('optimizer'):6.2f} {m.mean_step():6.2f} {m.wall():6.2f}  "
                f"{ratio:6.3f} {m.mean_step() / base.mean_step():6.3f} "
                f"{m.wall() / base.wall():6.3f}")
        if top and flops:
            line += f"   {flops / (m.wall() * 1e-3) / (top * 1e12):5.1%}"
        print(line + f"   [{m.implementation}]")
    print(f"({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--preset", nargs="+", default=["paper"] if cuda else ["tiny", "small"])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"] if cuda else ["fp32"])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per optimizer; the first "
                        "is a warm-up")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per epoch (default: 20 on CUDA, 10 on CPU)")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        help="name[:key=value,…] per row; the ratios are to the first row")
    args = parser.parse_args()
    rows = [parse_row(spec) for spec in args.optimizers]
    steps = args.steps or (20 if args.device.startswith("cuda") else 10)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device "
          f"{args.device}; {args.epochs} epochs of {steps} steps per optimizer, first dropped")
    for name in args.preset:
        for precision in args.precision:
            run(name, args.device, precision, args.epochs, steps, rows)


if __name__ == "__main__":
    main()
