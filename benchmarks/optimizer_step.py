"""Where an optimizer step's time goes on a GPU: launch (CPU) against kernels (GPU), refreshes.

`step_time.py` times whole training steps; this one takes them apart on a preset's U-Net
(`paper` unless ``--preset``; CUDA only):

1. forward+backward alone, per precision: the CPU time to issue it and the GPU time to run it
   (when the first is close to the second, the step is launch-bound and every launch an
   optimizer adds shows up in the step time);
2. each optimizer's `step()` on fresh random gradients, synchronised before and after: the CPU
   time to issue it, its GPU time (CUDA events), host synchronisations inside it (torch's sync
   debug mode), and for SOAP the refresh steps apart from the others;
3. SOAP's eigenbasis refresh by parts: `torch.linalg.qr` against its two halves (`geqrf`,
   `householder_product`) for each batch of Kronecker factors the U-Net has.

    python benchmarks/optimizer_step.py
    python benchmarks/optimizer_step.py --optimizers muon muon:cuda_graph=false --steps 40
    python benchmarks/optimizer_step.py --preset tiny --optimizers adamw --steps 2  # smoke
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections import Counter
from collections.abc import Callable

import torch
from step_time import parse_row  # benchmarks/ is on the path when this script runs

from diffbench.engine import soap
from diffbench.engine.config import Preset, load_preset
from diffbench.engine.diffusion import denoising_loss
from diffbench.engine.optimizers import build_optimizer
from diffbench.engine.soap import SOAP
from diffbench.engine.unet import build_model


def timed(fn: Callable[[], object], repeat: int, warmup: int = 3) -> tuple[float, float]:
    """Median (CPU ms to issue `fn`, GPU ms to run it), synchronised around each call."""
    cpu, gpu = [], []
    for i in range(warmup + repeat):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        began = time.perf_counter()
        start.record()
        fn()
        end.record()
        issued = time.perf_counter()
        torch.cuda.synchronize()
        if i >= warmup:
            cpu.append(1e3 * (issued - began))
            gpu.append(start.elapsed_time(end))
    return statistics.median(cpu), statistics.median(gpu)


def forward_backward(preset: Preset, repeat: int) -> None:
    model = build_model(preset.model).cuda()
    b, n = preset.train.batch_size, preset.data.resolution
    x = torch.randn(b, 2 * preset.model.window, n, n, device="cuda")
    generator = torch.Generator("cuda").manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    for precision in ("fp32", "bf16"):
        def step(precision: str = precision) -> None:
            model.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = denoising_loss(model, x, generator)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)

        cpu, gpu = timed(step, repeat)
        print(f"forward+backward {precision}: CPU issue {cpu:6.2f} ms, GPU {gpu:6.2f} ms")


def optimizer_steps(preset: Preset, spec: str, steps: int) -> None:
    label, name, options = parse_row(spec)
    model = build_model(preset.model).cuda()
    params = list(model.parameters())
    optimizer = build_optimizer(model, name, preset.optimizers[name].lr,
                                preset.optimizers[name].weight_decay, **options)
    generator = torch.Generator("cuda").manual_seed(0)

    def fresh_gradients() -> None:
        for p in params:
            p.grad = 1e-3 * torch.randn(p.shape, device="cuda", generator=generator)

    began = time.perf_counter()
    for _ in range(12):  # SOAP's set-up step, compilation, CUDA graph capture
        fresh_gradients()
        optimizer.step()
    torch.cuda.synchronize()
    setup = time.perf_counter() - began
    checked = 10  # a refresh among them
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(checked):
            fresh_gradients()
            torch.cuda.set_sync_debug_mode("warn")
            optimizer.step()
            torch.cuda.set_sync_debug_mode("default")
    syncs = Counter(str(w.message).splitlines()[0][:70] for w in caught)
    plain: list[tuple[float, float]] = []
    refresh: list[tuple[float, float]] = []
    for _ in range(steps):
        fresh_gradients()
        cpu, gpu = timed(optimizer.step, 1, warmup=0)
        group = optimizer.param_groups[0]
        refreshed = isinstance(optimizer, SOAP) and (
            (group["step"] - 1) % group["precondition_frequency"] == 0)
        (refresh if refreshed else plain).append((cpu, gpu))
    line = (f"{label:<40} CPU {statistics.median(c for c, _ in plain):6.2f} ms  "
            f"GPU {statistics.median(g for _, g in plain):6.2f} ms")
    if refresh:
        line += (f"  refresh: CPU {statistics.median(c for c, _ in refresh):6.1f} "
                 f"GPU {statistics.median(g for _, g in refresh):6.1f} ms")
    print(line + f"  (set-up {setup:.0f} s; {sum(syncs.values())} syncs in {checked} steps)",
          flush=True)
    for message, count in syncs.items():
        print(f"    sync ×{count}: {message}")


def refresh_parts(preset: Preset, repeat: int) -> None:
    shapes: Counter[tuple[int, ...]] = Counter()
    model = build_model(preset.model)
    for p in model.parameters():
        if p.ndim > 1:
            shapes[tuple(p.shape)] += 1
    totals: Counter[str] = Counter()
    print("QR of the stacked factors (n, s, s): GPU ms (CPU issue ms) of torch.linalg.qr, its "
          "halves geqrf and householder_product, and soap.householder_q:")
    for shape, n in sorted(shapes.items()):
        for s in shape:
            P = torch.randn(n, s, s, device="cuda")
            a, tau = torch.geqrf(P)
            error = float((soap.householder_q(P) - torch.linalg.qr(P)[0]).abs().max())
            line = f"  {shape!s:>18} ×{n:<2} s={s:<4}"
            for part, fn in (("qr", lambda P=P: torch.linalg.qr(P)),
                             ("geqrf", lambda P=P: torch.geqrf(P)),
                             ("householder", lambda a=a, tau=tau:
                              torch.linalg.householder_product(a, tau)),
                             ("householder_q", lambda P=P: soap.householder_q(P))):
                cpu, gpu = timed(fn, repeat)
                totals[part] += max(cpu, gpu)
                line += f"  {gpu:6.2f} ({cpu:5.2f})"
            print(line + f"  max |Δ| {error:.0e}")
    print("  per refresh (sum of max(CPU, GPU)): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in totals.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper",
                        help="whose U-Net and batch size (a name or a preset file)")
    parser.add_argument("--optimizers", nargs="+", default=[
        "adamw", "muon:cuda_graph=false", "muon", "soap:compile=false,cuda_graph=false",
        "soap:cuda_graph=false", "soap:compile=false", "soap"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", nargs="*", default=[], choices=["model", "refresh"])
    parser.add_argument("--small-dim", type=int, nargs="*", default=[],
                        help="also time the last optimizer with soap.SMALL_DIM set to each")
    args = parser.parse_args()
    preset = load_preset(args.preset)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; {args.preset}")
    if "model" not in args.skip:
        forward_backward(preset, 10)
    torch.backends.cuda.matmul.allow_tf32 = True
    for spec in args.optimizers:
        optimizer_steps(preset, spec, args.steps)
    for small in args.small_dim:
        soap.SMALL_DIM = small
        torch._dynamo.reset()
        print(f"with SMALL_DIM = {small}:")
        optimizer_steps(preset, args.optimizers[-1], args.steps)
    if "refresh" not in args.skip:
        refresh_parts(preset, 5)


if __name__ == "__main__":
    main()
