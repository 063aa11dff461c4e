"""Physics of the Kolmogorov solver: projection, viscous decay, forcing, batching, seeds."""

import math

import pytest
import torch

from diffbench.engine import kolmogorov

SIZE = 32


def mac_coordinates(size: int) -> dict[str, torch.Tensor]:
    """Face coordinates in float64: u at ((i+1)h, (j+1/2)h), v at ((i+1/2)h, (j+1)h)."""
    h = 2 * math.pi / size
    i = torch.arange(size, dtype=torch.float64)
    return {"whole": (i + 1) * h, "half": (i + 0.5) * h}


def relative_divergence(velocity: torch.Tensor) -> float:
    """‖∇·u‖ relative to ‖u‖/h, the size of a velocity gradient on this grid."""
    h = 2 * math.pi / velocity.shape[-1]
    return (kolmogorov.divergence_of(velocity).norm() * h / velocity.norm()).item()


def test_projection_makes_fields_discretely_divergence_free():
    noise = torch.randn(3, 2, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    assert relative_divergence(noise) > 0.5
    assert relative_divergence(kolmogorov.project(noise)) <= 1e-6


def test_projection_is_idempotent_on_solenoidal_fields():
    velocity = kolmogorov.project(torch.randn(2, 2, SIZE, SIZE))
    assert torch.allclose(kolmogorov.project(velocity), velocity, atol=1e-6)


def test_initial_velocity_is_divergence_free_with_max_speed_three():
    velocity = kolmogorov.initial_velocity(2, SIZE, seed=[11, 12])
    assert velocity.shape == (2, 2, SIZE, SIZE)
    assert velocity.dtype == torch.float32
    assert relative_divergence(velocity) <= 1e-6
    speed = velocity.square().sum(dim=1).sqrt().amax(dim=(-2, -1))
    assert torch.allclose(speed, torch.full((2,), 3.0), rtol=1e-5)


def test_initial_spectrum_peaks_near_wavenumber_four():
    velocity = kolmogorov.initial_velocity(4, 64, seed=0).double()
    power = torch.fft.fft2(velocity).abs().square().sum(dim=(0, 1))
    k = torch.fft.fftfreq(64, 1 / 64)
    shells = torch.hypot(k[:, None], k[None, :]).round().long()
    energy = torch.zeros(shells.max() + 1, dtype=torch.float64).index_add_(
        0, shells.flatten(), power.flatten())
    assert 3 <= int(energy[1:].argmax()) + 1 <= 5


def test_taylor_green_vortex_decays_at_the_viscous_rate():
    """Without forcing or drag, u = A(sin x cos y, −cos x sin y) decays as exp(−2νt)."""
    at = mac_coordinates(SIZE)
    amplitude, viscosity, dt, steps = 0.1, 0.05, 0.005, 200
    u = amplitude * torch.sin(at["whole"])[:, None] * torch.cos(at["half"])[None, :]
    v = -amplitude * torch.cos(at["half"])[:, None] * torch.sin(at["whole"])[None, :]
    start = torch.stack([u, v]).float()
    end = kolmogorov.advance(start, steps, dt=dt, viscosity=viscosity, drag=0.0,
                             forcing_amplitude=0.0)
    decay = (end.double().norm() / start.double().norm()).item()
    assert decay == pytest.approx(math.exp(-2 * viscosity * dt * steps), rel=3e-4)
    cosine = torch.nn.functional.cosine_similarity(end.flatten(), start.flatten(), dim=0)
    assert cosine > 1 - 1e-6


def test_forcing_pushes_u_along_sin_4y_and_leaves_v_alone():
    dt = 0.01
    rest = torch.zeros(1, 2, SIZE, SIZE)
    pushed = kolmogorov.advance(rest, 1, dt=dt)
    y = mac_coordinates(SIZE)["half"].float()
    expected = dt * torch.sin(4 * y)  # varies along the last axis (y), constant along x
    assert torch.allclose(pushed[0, 0], expected.expand(SIZE, SIZE), atol=1e-7)
    assert torch.equal(pushed[0, 1], torch.zeros(SIZE, SIZE))


def test_drag_slows_a_uniform_flow_by_a_tenth_per_unit_time():
    dt = 0.01
    uniform = torch.ones(1, 2, SIZE, SIZE) * torch.tensor([1.0, -0.5])[:, None, None]
    slowed = kolmogorov.advance(uniform, 1, dt=dt, forcing_amplitude=0.0)
    assert torch.allclose(slowed, uniform * (1 - 0.1 * dt), atol=1e-7)


def test_batched_rollout_equals_per_trajectory_rollouts_to_rounding():
    """Bit for bit where MKL's FFTs are batch-invariant (its AVX2 path); its AVX-512 path
    rounds a batched transform differently, by a few ulps (docs/DATA.md)."""
    seeds = [3, 1, 4]
    kwargs = {"transitions": 3, "inner_steps": 4, "burn_in": 1, "factor": 2, "dt": 0.02}
    batched = kolmogorov.rollout(kolmogorov.initial_velocity(3, SIZE, seed=seeds), **kwargs)
    assert batched.shape == (3, 2, 2, SIZE // 2, SIZE // 2)
    for b, seed in enumerate(seeds):
        alone = kolmogorov.rollout(kolmogorov.initial_velocity(1, SIZE, seed=[seed]), **kwargs)
        torch.testing.assert_close(batched[b], alone[0], rtol=4e-7, atol=1e-6)


def test_same_seed_same_trajectory_different_seeds_different_noise():
    first = kolmogorov.initial_velocity(2, SIZE, seed=[7, 8])
    again = kolmogorov.initial_velocity(2, SIZE, seed=[7, 8])
    assert torch.equal(first, again)
    assert not torch.allclose(first[0], first[1])
    seeds = kolmogorov.trajectory_seeds(0, 1024)
    assert len(set(seeds)) == 1024
    assert seeds == kolmogorov.trajectory_seeds(0, 1024)
    assert set(seeds).isdisjoint(kolmogorov.trajectory_seeds(1, 1024))


def test_coarsen_is_a_block_mean():
    field = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(kolmogorov.coarsen(field, 2)[0, 0],
                       torch.tensor([[2.5, 4.5], [10.5, 12.5]]))


@pytest.mark.slow
def test_compiled_step_agrees_with_eager():
    velocity = kolmogorov.initial_velocity(1, 16, seed=0)
    eager = kolmogorov.advance(velocity, 3, dt=0.02)
    fused = kolmogorov.advance(velocity, 3, dt=0.02, compile=True)
    assert torch.allclose(eager, fused, rtol=0, atol=1e-6)


def test_developed_flow_has_the_reference_magnitudes():
    """A coarse (64²) run still lands on the spec's statistics to within a factor ~1.5.

    Spec at 256²→64²: u std ≈ 0.99, v std ≈ 0.94, kinetic energy ≈ 0.93; the mean flow
    follows the forcing, so ⟨u⟩ along x correlates positively with sin(4y).
    """
    size, inner = 64, 21
    velocity = kolmogorov.initial_velocity(3, size, seed=kolmogorov.trajectory_seeds(0, 3))
    states = kolmogorov.rollout(velocity, 40, inner, burn_in=24, dt=0.2 / inner).double()
    u, v = states[:, :, 0], states[:, :, 1]
    assert 0.6 < u.std() < 1.5
    assert 0.6 < v.std() < 1.5
    energy = 0.5 * (u.square() + v.square()).mean()
    assert 0.4 < energy < 1.5
    y = mac_coordinates(size)["half"]
    profile = u.mean(dim=(0, 1, 2))  # mean over trajectories, time and x
    along_forcing = (profile * torch.sin(4 * y)).mean() * 2
    assert 0.05 < along_forcing < 2.0
