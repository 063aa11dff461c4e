"""diffbench's solver against jax-cfd, the solver that made the paper's data.

Needs the ``reference`` extra (jax, jax-cfd), which `.ci/run` installs.
"""

import math

import numpy as np
import pytest
import torch

from diffbench.engine import kolmogorov

jax = pytest.importorskip("jax")
cfd = pytest.importorskip("jax_cfd.base")
if not hasattr(jax, "tree_map"):  # jax-cfd 0.2.1 predates its removal from jax
    jax.tree_map = jax.tree.map

SIZE, INNER = 64, 21


@pytest.fixture(scope="module")
def grid():
    return cfd.grids.Grid((SIZE, SIZE), domain=((0, 2 * math.pi), (0, 2 * math.pi)))


def reference_initial_condition(grid, seed: int):
    """jax-cfd's filtered velocity field and the white noise it was made from."""
    key = jax.random.PRNGKey(seed)
    velocity = cfd.initial_conditions.filtered_velocity_field(
        key, grid, maximum_velocity=3.0, peak_wavenumber=4.0)
    noise = np.stack([np.asarray(jax.random.normal(k, grid.shape))
                      for k in jax.random.split(key, 2)])
    return velocity, noise


def as_array(velocity) -> np.ndarray:
    return np.stack([np.asarray(u.data) for u in velocity])


def relative_error(ours: torch.Tensor, reference: np.ndarray) -> float:
    return float(np.linalg.norm(ours.numpy() - reference) / np.linalg.norm(reference))


def test_initial_condition_pipeline_matches_jax_cfd(grid):
    reference, noise = reference_initial_condition(grid, seed=3)
    ours = kolmogorov.filtered_velocity(torch.from_numpy(noise))
    assert relative_error(ours, as_array(reference)) < 1e-6


def test_inner_steps_match_jax_cfd_to_float32_rounding(grid):
    dt = 0.2 / INNER
    forcing = cfd.forcings.simple_turbulence_forcing(
        grid=grid, constant_magnitude=1.0, constant_wavenumber=4.0,
        linear_coefficient=-0.1, forcing_type="kolmogorov")
    step = cfd.equations.semi_implicit_navier_stokes(
        grid=grid, forcing=forcing, dt=dt, density=1.0, viscosity=1e-3)
    transition = jax.jit(cfd.funcutils.repeated(step, steps=INNER))

    reference, _ = reference_initial_condition(grid, seed=0)
    ours = torch.from_numpy(as_array(reference))
    for _ in range(3):
        reference = transition(reference)
        ours = kolmogorov.advance(ours, INNER, dt=dt)
    assert relative_error(ours, as_array(reference)) < 1e-6
