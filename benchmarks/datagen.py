"""Data-generation speed of the `paper` preset (256² solver grid), eager against compiled.

For each device (the CPU, and CUDA when present) and each batch size, times inner steps
of the solver after a warm-up (which holds `torch.compile`'s compilation) and prints
inner steps per second (trajectory-steps), trajectories per minute and the projected
time for the preset's trajectories. Ratios are measured side by side in this one run.

    python benchmarks/datagen.py                      # CPU, batch 1 and 8
    python benchmarks/datagen.py --batch 64 256 1024  # on a GPU machine
"""

from __future__ import annotations

import argparse
import time

import torch

from diffbench.engine import kolmogorov
from diffbench.engine.config import load_preset


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(device: torch.device, batch: int, size: int, dt: float, steps: int,
                     compile: bool) -> float:
    """Trajectory inner steps per second, timed after one warm-up call."""
    velocity = kolmogorov.initial_velocity(batch, size, seed=0, device=device)
    kolmogorov.advance(velocity, 2, dt=dt, compile=compile)
    _synchronize(device)
    start = time.perf_counter()
    kolmogorov.advance(velocity, steps, dt=dt, compile=compile)
    _synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--batch", type=int, nargs="+", default=None,
                        help="batch sizes (default: 1 8 on CPU, 64 256 1024 on CUDA)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed inner steps per measurement (default: 20 CPU, 200 CUDA)")
    parser.add_argument("--cpu", action="store_true", help="CPU only, even with a GPU")
    args = parser.parse_args()

    data = load_preset(args.preset).data
    steps_per_trajectory = data.transitions * data.inner_steps
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu:
        devices.append(torch.device("cuda"))
    print(f"preset {args.preset}: {data.size}² grid, {steps_per_trajectory} inner steps per "
          f"trajectory, {data.trajectories} trajectories; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'device':<28} {'batch':>5} {'mode':>8} {'steps/s':>9} {'traj/min':>9} "
          f"{'all (min)':>9} {'speed-up':>8}")
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        batches = args.batch or ([1, 8] if device.type == "cpu" else [64, 256, 1024])
        steps = args.steps or (20 if device.type == "cpu" else 200)
        for batch in batches:
            eager = None
            for compile in (False, True):
                rate = steps_per_second(device, batch, data.size, data.dt, steps, compile)
                eager = eager or rate
                per_minute = 60 * rate / steps_per_trajectory
                print(f"{name:<28} {batch:>5} {'compiled' if compile else 'eager':>8} "
                      f"{rate:>9.0f} {per_minute:>9.2f} {data.trajectories / per_minute:>9.1f} "
                      f"{rate / eager:>7.2f}x", flush=True)
    print("(jax-cfd, the reference, needed ≈ 25 s per trajectory per CPU core.)")


if __name__ == "__main__":
    main()
