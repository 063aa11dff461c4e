"""Fidelity and speed of diffbench's Kolmogorov solver against jax-cfd, side by side.

Both solvers start from the same jax-cfd initial condition and take the same float32
inner steps; the script prints the relative L2 difference after each stored interval
and the time per inner step of each on this machine's CPU (one thread each unless
``--threads``). Needs the ``reference`` extra: ``pip install -e '.[reference]'``.

    python benchmarks/fidelity.py --size 256 --intervals 10
"""

from __future__ import annotations

import argparse
import math
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--inner-steps", type=int, default=82)
    parser.add_argument("--intervals", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    os.environ.setdefault(
        "XLA_FLAGS",
        f"--xla_cpu_multi_thread_eigen={'true' if args.threads > 1 else 'false'} "
        f"intra_op_parallelism_threads={args.threads}",
    )
    import jax
    import jax.numpy as jnp

    if not hasattr(jax, "tree_map"):  # jax-cfd 0.2.1 predates its removal from jax
        jax.tree_map = jax.tree.map
    import jax_cfd.base as cfd
    import numpy as np
    import torch

    from diffbench.engine import kolmogorov

    torch.set_num_threads(args.threads)
    size, inner = args.size, args.inner_steps
    dt = 0.2 / inner
    grid = cfd.grids.Grid((size, size), domain=((0, 2 * math.pi), (0, 2 * math.pi)))
    forcing = cfd.forcings.simple_turbulence_forcing(
        grid=grid, constant_magnitude=1.0, constant_wavenumber=4.0,
        linear_coefficient=-0.1, forcing_type="kolmogorov")
    jax_step = cfd.funcutils.repeated(
        cfd.equations.semi_implicit_navier_stokes(
            grid=grid, forcing=forcing, dt=dt, density=1.0, viscosity=1e-3),
        steps=inner)
    jax_step = jax.jit(jax_step)

    # The same noise through both initial-condition pipelines.
    key = jax.random.PRNGKey(args.seed)
    reference = cfd.initial_conditions.filtered_velocity_field(
        key, grid, maximum_velocity=3.0, peak_wavenumber=4.0)
    noise = np.stack([np.asarray(jax.random.normal(k, grid.shape))
                      for k in jax.random.split(key, 2)])
    ours = kolmogorov.filtered_velocity(torch.from_numpy(noise))
    ref = np.stack([u.data for u in reference])
    print(f"initial condition: relative L2 difference "
          f"{np.linalg.norm(ours.numpy() - ref) / np.linalg.norm(ref):.2e}")

    state = tuple(reference)
    velocity = torch.from_numpy(ref.copy())[None]
    jax_seconds = torch_seconds = 0.0
    jax.block_until_ready(jax_step(state))  # compile outside the clock
    print(f"{'t':>6} {'rel. L2 diff':>13} {'max |diff|':>11}")
    for interval in range(1, args.intervals + 1):
        start = time.perf_counter()
        state = jax.block_until_ready(jax_step(state))
        jax_seconds += time.perf_counter() - start
        start = time.perf_counter()
        velocity = kolmogorov.advance(velocity, inner, dt=dt)
        torch_seconds += time.perf_counter() - start
        ref = np.stack([np.asarray(jnp.asarray(u.data)) for u in state])
        diff = velocity[0].numpy() - ref
        print(f"{interval * 0.2:6.1f} {np.linalg.norm(diff) / np.linalg.norm(ref):13.2e} "
              f"{np.abs(diff).max():11.2e}")
    steps = args.intervals * inner
    start_velocity = torch.from_numpy(np.stack([u.data for u in reference]))[None]
    kolmogorov.advance(start_velocity, 2, dt=dt, compile=True)  # compile outside the clock
    start = time.perf_counter()
    fused = kolmogorov.advance(start_velocity, steps, dt=dt, compile=True)
    compiled_seconds = time.perf_counter() - start
    diff = fused[0].numpy() - ref
    print(f"compiled diffbench after {steps} steps: relative L2 difference to jax-cfd "
          f"{np.linalg.norm(diff) / np.linalg.norm(ref):.2e}")
    print(f"\nms per inner step at {size}² on {args.threads} thread(s): "
          f"jax-cfd {1e3 * jax_seconds / steps:.2f}, diffbench eager "
          f"{1e3 * torch_seconds / steps:.2f}, compiled {1e3 * compiled_seconds / steps:.2f} "
          f"(diffbench/jax-cfd: eager {torch_seconds / jax_seconds:.2f}, "
          f"compiled {compiled_seconds / jax_seconds:.2f})")


if __name__ == "__main__":
    main()
