"""Step time of each optimizer as a ratio to AdamW, measured by the trainer itself.

Each optimizer trains the preset's U-Net for a few epochs on random windows of the preset's
shape (the data's values do not change the time of a step) through `Trainer`, whose step
records split every step into data, forward+backward (with gradient norm and clipping) and
optimizer step, timed with CUDA events on a GPU. The first epoch is a warm-up (cuDNN
autotuning, first preconditioners) and is left out; SOAP refreshes its eigenbases every 10
steps, so the timed steps span several refreshes. Medians per phase, and the wall-clock time
per step of the timed epochs (what a run costs, Python overhead included).

On CUDA the model FLOPs of one step (forward + backward, counted by torch's FlopCounterMode;
the spec's figure is ≈ 2.4 TFLOP at batch 32 for `paper`) give the model FLOP utilisation
against the GPU's dense peak for the precision (TF32 for fp32, bf16 for bf16).

    python benchmarks/step_time.py                       # CPU: tiny and small, fp32
    python benchmarks/step_time.py --preset paper        # CUDA: paper in fp32 and bf16
    python benchmarks/step_time.py --preset paper --precision bf16 --epochs 4
    python benchmarks/step_time.py --optimizers adamw soap   # SOAP: ours and pytorch-optimizer's
    python benchmarks/step_time.py --optimizers adamw soap --soap batched --soap-compile both
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from diffbench.engine.config import Preset, load_preset, override
from diffbench.engine.metrics import EpochRecord, StartRecord, Steps
from diffbench.engine.optimizers import OPTIMIZERS, SOAP_IMPLEMENTATIONS
from diffbench.engine.run import RunConfig, TrainingData
from diffbench.engine.training import Trainer
from diffbench.engine.unet import build_model

# Dense peak TFLOP/s (no sparsity) by (GPU name fragment, precision); first match wins.
PEAKS = [("H100 PCIe", {"fp32": 378.0, "bf16": 756.0}),
         ("H100", {"fp32": 494.7, "bf16": 989.4}),
         ("H200", {"fp32": 494.7, "bf16": 989.4}),
         ("A100", {"fp32": 156.0, "bf16": 312.0})]


def synthetic(preset: Preset, steps_per_epoch: int) -> TrainingData:
    """Random trajectories: as many as fill ``steps_per_epoch`` full batches, window long."""
    b, window, n = preset.train.batch_size, preset.model.window, preset.data.resolution
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(b * steps_per_epoch, window, 2, n, n, generator=generator)
    return TrainingData(train=train, valid=train[:2].clone())


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


def measure(preset: Preset, optimizer: str, device: str, precision: str, epochs: int,
            steps_per_epoch: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Median ms per phase over epochs 2…, and wall ms per step of those epochs."""
    preset = override(preset, {"train.epochs": epochs, "train.warmup_epochs": 1,
                               "train.valid_every": epochs, "train.samples_every": 0})
    defaults = preset.optimizers[optimizer]
    config = RunConfig(preset=preset, optimizer=optimizer, lr=defaults.lr,
                       weight_decay=defaults.weight_decay, device=device, precision=precision,
                       options=options or {})
    trainer = Trainer(config, synthetic(preset, steps_per_epoch), flush_every=10**9)
    steps, epoch_s, implementation = [], [], ""
    for record in trainer:
        if isinstance(record, StartRecord):
            implementation = record.provenance["optimizer_implementation"]
        elif isinstance(record, Steps):
            steps += [s for s in record.records if s.epoch > 0]
        elif isinstance(record, EpochRecord) and record.epoch > 0:
            epoch_s.append(record.epoch_s)
        elif getattr(record, "state", "done") != "done":
            raise RuntimeError(f"{optimizer}: {record}")
    phase = {k: statistics.median(getattr(s, f"{k}_ms") for s in steps)
             for k in ("data", "compute", "optimizer")}
    return {**phase, "wall": 1e3 * sum(epoch_s) / len(steps), "implementation": implementation}


def rows(optimizers: list[str], soap: list[str],
         compile: str = "auto") -> list[tuple[str, str, dict[str, Any]]]:
    """(label, optimizer, options) per row: SOAP once per implementation in `soap`; the batched
    one with `compile` auto (compiled on CUDA), on, off, or both (two rows)."""
    modes = {"auto": [None], "on": [True], "off": [False], "both": [False, True]}[compile]
    out = []
    for name in optimizers:
        if name == "soap":
            for i in soap:
                if i != "batched":
                    out.append((f"soap[{i}]", name, {"implementation": i}))
                    continue
                out += [("soap" + {None: "", False: "[eager]", True: "[compiled]"}[c], name,
                         {"implementation": i, "compile": c}) for c in modes]
        else:
            out.append((name, name, {}))
    return out


def run(preset_name: str, device: str, precision: str, epochs: int, steps_per_epoch: int,
        optimizers: list[tuple[str, str, dict[str, Any]]]) -> None:
    preset = load_preset(preset_name)
    torch_device = torch.device("cuda" if device.startswith("cuda") else "cpu")
    flops = step_flops(preset, torch_device) if torch_device.type == "cuda" else None
    top = peak(torch_device, precision)
    print(f"\n{preset_name} ({preset.model.channels} × {preset.model.blocks} blocks, "
          f"{preset.data.resolution}², batch {preset.train.batch_size}), {precision}, "
          f"{torch.cuda.get_device_name(torch_device) if flops else 'CPU'}"
          + (f", {flops / 1e12:.2f} TFLOP per step (fwd+bwd)" if flops else ""))
    print(f"{'optimizer':<22} {'data':>6} {'fwd+bwd':>8} {'opt':>7} {'wall':>7}   "
          f"{'× AdamW':>7} {'opt × AdamW':>11}" + ("   MFU" if top else "")
          + "   (ms per step; medians)")
    base = None
    for label, name, options in optimizers:
        started = time.perf_counter()
        m = measure(preset, name, device, precision, epochs, steps_per_epoch, options)
        if base is None:
            base = m
        ratio = (m["compute"] + m["optimizer"]) / (base["compute"] + base["optimizer"])
        line = (f"{label:<22} {m['data']:6.2f} {m['compute']:8.2f} {m['optimizer']:7.2f} "
                f"{m['wall']:7.2f}   {ratio:7.3f} {m['optimizer'] / base['optimizer']:11.2f}")
        if top and flops:
            line += f"   {flops / (m['wall'] * 1e-3) / (top * 1e12):5.1%}"
        print(line + f"   [{m['implementation']}; {time.perf_counter() - started:.0f} s]",
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cuda = torch.cuda.is_available()
    parser.add_argument("--preset", nargs="+", default=["paper"] if cuda else ["tiny", "small"])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"] if cuda else ["fp32"])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per optimizer; the first "
                        "is a warm-up")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per epoch (default: 30 on CUDA, 10 on CPU)")
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS),
                        help="AdamW first: the ratios are to the first one")
    parser.add_argument("--soap", nargs="+", default=list(SOAP_IMPLEMENTATIONS),
                        choices=SOAP_IMPLEMENTATIONS,
                        help="SOAP implementations to time, one row each")
    parser.add_argument("--soap-compile", default="auto", choices=["auto", "on", "off", "both"],
                        help="the batched SOAP's torch.compile: auto (on CUDA only), on, off, "
                        "or both (one row each)")
    args = parser.parse_args()
    steps = args.steps or (30 if args.device.startswith("cuda") else 10)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, device "
          f"{args.device}; {args.epochs} epochs of {steps} steps per optimizer, first dropped")
    for name in args.preset:
        for precision in args.precision:
            run(name, args.device, precision, args.epochs, steps,
                rows(args.optimizers, args.soap, args.soap_compile))


if __name__ == "__main__":
    main()
