"""Statistics of freshly simulated trajectories against the reference data's (spec §1).

Simulates a few trajectories of a preset exactly as `data generate` does and prints
velocity std, kinetic energy, vorticity std, lag-1 autocorrelation and the shell energy
spectrum next to the values the spec gives for 8 jax-cfd trajectories at 64². With
``--compare-cpu`` on a GPU machine it also reports how far a CUDA rollout drifts from
the CPU one and whether a batched CUDA rollout equals per-trajectory ones.

    python benchmarks/datastats.py --preset paper --trajectories 16 --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from diffbench.engine import kolmogorov
from diffbench.engine.config import load_preset
from diffbench.engine.dataset import simulate_trajectories
from diffbench.engine.device import resolve_device
from diffbench.engine.statistics import flow_statistics

REFERENCE = {  # spec §1: 8 jax-cfd trajectories, 256² → 64²
    "u_std": 0.99, "v_std": 0.94, "kinetic_energy": 0.93, "vorticity_std": 4.1,
    "lag1_autocorrelation": 0.97,
}
REFERENCE_SPECTRUM = {1: 0.24, 2: 0.27, 3: 0.16, 4: 0.18, 5: 0.034, 6: 0.018, 7: 0.0075,
                      8: 0.0046, 16: 1.8e-4, 32: 2.5e-6}


def device_consistency(size: int, dt: float, steps: int) -> None:
    """CUDA against CPU for one trajectory, and batched against single on CUDA."""
    cpu = kolmogorov.initial_velocity(4, size, seed=[1, 2, 3, 4])
    gpu = cpu.cuda()
    a = kolmogorov.advance(cpu, steps, dt=dt)
    b = kolmogorov.advance(gpu, steps, dt=dt).cpu()
    print(f"CUDA vs CPU after {steps} inner steps: relative L2 difference "
          f"{((a - b).norm() / a.norm()).item():.2e}")
    single = torch.cat([kolmogorov.advance(gpu[i:i + 1], steps, dt=dt) for i in range(4)])
    batched = kolmogorov.advance(gpu, steps, dt=dt)
    print(f"CUDA batched vs per-trajectory: bit-identical {torch.equal(single, batched)}, "
          f"max |diff| {(single - batched).abs().max().item():.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compare-cpu", action="store_true")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_preset(args.preset).data
    data = dataclasses.replace(data, chunk=args.trajectories)
    seeds = kolmogorov.trajectory_seeds(data.seed, args.trajectories)
    start = time.perf_counter()
    states = simulate_trajectories(data, seeds, device).numpy()
    seconds = time.perf_counter() - start
    print(f"{args.trajectories} trajectories of '{args.preset}' on {device} in {seconds:.1f} s "
          f"-> {tuple(states.shape)}")
    stats = flow_statistics(states).as_dict()
    print(f"{'statistic':<22} {'diffbench':>10} {'reference':>10}")
    for key, reference in REFERENCE.items():
        print(f"{key:<22} {stats[key]:>10.3f} {reference:>10.3f}")
    print(f"{'mean flow on sin(4y)':<22} {stats['mean_flow_sin4y']:>10.3f} {'':>10}")
    print(f"{'relative divergence':<22} {stats['divergence']:>10.3g} {'':>10}")
    for k, reference in REFERENCE_SPECTRUM.items():
        if k <= len(stats["spectrum"]):
            print(f"{f'E({k})':<22} {stats['spectrum'][k - 1]:>10.3g} {reference:>10.3g}")
    if args.compare_cpu and device.type == "cuda":
        device_consistency(data.size, data.dt, 4 * data.inner_steps)


if __name__ == "__main__":
    main()
