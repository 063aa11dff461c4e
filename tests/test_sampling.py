"""The sampler: one step against its formula, an exact Gaussian oracle, window composition."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from diffbench.engine.config import ModelConfig
from diffbench.engine.diffusion import ETA, mu, sigma
from diffbench.engine.sampling import composed_noise, sample_trajectory, sample_windows
from diffbench.engine.unet import build_model


class Constant(nn.Module):
    """ε̂ = c; records the times it is asked at."""

    window = 3

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))
        self.times: list[Tensor] = []

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.times.append(t)
        return self.c.expand_as(x)


class Gaussian(nn.Module):
    r"""The exact ε̂ for data x ~ N(m, v I): E[ε | x_t] = σ (x_t − μ m) / (μ² v + σ²)."""

    def __init__(self, m: float, v: float):
        super().__init__()
        self.m, self.v = m, v

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = t.reshape(-1, *(1,) * (x.ndim - 1))
        return sigma(t) * (x - mu(t) * self.m) / (mu(t) ** 2 * self.v + sigma(t) ** 2)


class Memory(nn.Module):
    r"""The exact ε̂ of the empirical distribution of ``points`` (P, …), point masses:
    E[x | x_t] = Σᵢ softmaxᵢ(−‖x_t − μ pᵢ‖² / 2σ²) pᵢ and ε̂ = (x_t − μ E[x | x_t]) / σ."""

    def __init__(self, points: Tensor, window: int):
        super().__init__()
        self.points, self.window = points.double().flatten(1), window  # (P, D)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        m, s = mu(t.double())[:, None], sigma(t.double())[:, None]  # (B, 1)
        y = x.double().flatten(1)  # (B, D)
        logits = (2 * y @ self.points.T - m * self.points.square().sum(1)) * m / (2 * s**2)
        mean = torch.softmax(logits, dim=1) @ self.points  # (B, D)
        return ((y - m * mean) / s).reshape(x.shape).to(x.dtype)


def relative_distance_to_nearest(x: Tensor, points: Tensor) -> Tensor:
    """Per sample: ‖x − nearest point‖ / ‖nearest point‖, both flattened past the first axis."""
    x, points = x.double().flatten(1), points.double().flatten(1)
    index = torch.cdist(x, points).argmin(dim=1)
    return (x - points[index]).norm(dim=1) / points[index].norm(dim=1)


class Marker(nn.Module):
    """ε̂ = x + 100 · (state's position in its window) + 10 000 · t: who answered is readable."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.batches: list[int] = []

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.batches.append(len(x))
        position = torch.arange(self.window).repeat_interleave(2)  # (2w,), time-major u, v
        return x + 100 * position[:, None, None] + 10_000 * t[:, None, None, None]


def test_one_predictor_step_is_the_formula() -> None:
    """One step from t = 1 to 0: x₀ = r x₁ + (σ(0) − r σ(1)) c with r = μ(0)/μ(1) = 1/η."""
    model = Constant(0.3)
    out = sample_windows(model, 2, (4, 3, 3), steps=1, generator=torch.Generator().manual_seed(5))
    x = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(5))
    r = 1 / ETA
    torch.testing.assert_close(out, r * x + (ETA - r * 1.0) * 0.3, rtol=1e-5, atol=1e-5)
    (t,) = model.times
    assert torch.equal(t, torch.ones(2))


def test_predictor_then_corrector_is_the_formula() -> None:
    """Two steps with one correction: the grid is 1, ½, 0 and the corrector runs at the next t."""
    model, c, tau = Constant(0.5), 0.5, 0.25
    out = sample_windows(model, 3, (2, 2, 2), steps=2, corrections=1, tau=tau,
                         generator=torch.Generator().manual_seed(9))
    replay = torch.Generator().manual_seed(9)
    x = torch.randn(3, 2, 2, 2, generator=replay).double()
    for t, s in ((1.0, 0.5), (0.5, 0.0)):
        t, s = torch.tensor(t, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
        r = mu(s) / mu(t)
        x = r * x + (sigma(s) - r * sigma(t)) * c
        delta = tau / c**2
        z = torch.randn(3, 2, 2, 2, generator=replay).double()
        x = x - sigma(s) * (delta * c + (2 * delta) ** 0.5 * z)
    torch.testing.assert_close(out, x.float(), rtol=1e-5, atol=1e-5)
    assert [t[0].item() for t in model.times] == [1.0, 0.5, 0.5, 0.0]


def test_gaussian_oracle_recovers_the_data_distribution() -> None:
    """With the exact ε̂ of N(m, v I), DDIM steps alone carry N(0, I) to N(m, v I)."""
    m, v = 0.7, 0.25
    out = sample_windows(Gaussian(m, v), 64, (1024,), steps=256,
                         generator=torch.Generator().manual_seed(0))
    assert out.mean().item() == pytest.approx(m, abs=0.01)
    assert out.var().item() == pytest.approx(v, rel=0.03)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_gaussian_oracle_with_corrector_reaches_the_langevin_fixed_point(tau: float) -> None:
    r"""The corrector is unadjusted Langevin with step h = τ σ² / mean ε̂² = τ V² / Var x on a
    Gaussian of variance V; its fixed point Var x = (1 + τ/2) V is reached after one step,
    so the spec's τ = 0.5 ends 25 % over the data variance (the sampler is SDA's, unadjusted)."""
    m, v = 0.7, 0.25
    out = sample_windows(Gaussian(m, v), 64, (1024,), steps=64, corrections=1, tau=tau,
                         generator=torch.Generator().manual_seed(0))
    assert out.mean().item() == pytest.approx(m, abs=0.01)
    assert out.var().item() == pytest.approx((1 + tau / 2) * v, rel=0.03)


def test_optimal_denoiser_returns_training_windows() -> None:
    """With the exact ε̂ of a set of windows, the sampler from N(0, I) with μ(1) = η = 1e-3
    (r's multiply to 1000) lands on those windows, at their scale, and on more than one."""
    points = 2 * torch.randn(16, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    out = sample_windows(Memory(points, 3), 32, (6, 4, 4), steps=32,
                         generator=torch.Generator().manual_seed(1))
    assert relative_distance_to_nearest(out, points).max() < 0.01
    assert torch.cdist(out.flatten(1), points.flatten(1)).argmin(1).unique().numel() > 8
    assert out.std().item() == pytest.approx(2, rel=0.15)


def test_optimal_denoiser_composes_states_of_training_trajectories() -> None:
    """The exact ε̂ of the windows of a few trajectories, composed over a longer trajectory with
    the spec's corrector: every state lands on a training state, at the data's scale. (Whole
    trajectories need not come back: composed point-mass posteriors commit window by window.)"""
    trajectories = torch.randn(4, 6, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    windows = trajectories.unfold(1, 3, 1).movedim(-1, 2).flatten(0, 1)  # (16, 3, 2, 4, 4)
    out = sample_trajectory(Memory(windows, 3), 8, 4, (2, 4, 4), steps=32, corrections=1,
                            generator=torch.Generator().manual_seed(2))
    states = trajectories.flatten(0, 1)
    assert relative_distance_to_nearest(out.flatten(0, 1), states).max() < 0.01
    assert out.std().item() == pytest.approx(1, rel=0.15)


def test_samples_follow_the_generator_and_restore_mode() -> None:
    model = build_model(ModelConfig(channels=(4, 8), blocks=1, window=3, embedding=8))
    a, b = (sample_windows(model, 2, (6, 8, 8), steps=3, corrections=1,
                           generator=torch.Generator().manual_seed(1)) for _ in range(2))
    assert a.shape == (2, 6, 8, 8) and torch.equal(a, b) and not a.requires_grad
    assert model.training


@pytest.mark.parametrize(("window", "length"), [(3, 3), (3, 7), (5, 9), (5, 6)])
def test_each_state_takes_its_score_from_the_right_window(window: int, length: int) -> None:
    model, k = Marker(window), window // 2
    x = torch.randn(2, length, 2, 4, 4)
    t = torch.tensor([0.25, 0.5])
    e = composed_noise(model, x, t, batch_size=3)
    position = [*range(k), *[k] * (length - 2 * k), *range(k + 1, window)]  # ⌊w/2⌋ at each end
    expected = x + 100 * torch.tensor(position)[:, None, None, None] + 10_000 * t[:, None, None,
                                                                                 None, None]
    torch.testing.assert_close(e, expected)
    windows = 2 * (length - window + 1)
    assert model.batches == [3] * (windows // 3) + ([windows % 3] if windows % 3 else [])


def test_trajectory_of_one_window_is_a_window_sample() -> None:
    model = build_model(ModelConfig(channels=(4, 8), blocks=1, window=3, embedding=8))
    kwargs = {"steps": 2, "corrections": 1, "tau": 0.5}
    trajectory = sample_trajectory(model, 3, 2, (2, 8, 8), **kwargs,
                                   generator=torch.Generator().manual_seed(4))
    windows = sample_windows(model, 2, (6, 8, 8), **kwargs,
                             generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(trajectory, windows.unflatten(1, (3, 2)))
    longer = sample_trajectory(model, 7, 2, (2, 8, 8), steps=2, batch_size=4)
    assert longer.shape == (2, 7, 2, 8, 8) and torch.isfinite(longer).all()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="shorter than the window"):
        sample_trajectory(Marker(5), 4, 1, (2, 4, 4), steps=1)
    with pytest.raises(ValueError, match="steps"):
        sample_windows(Constant(0.0), 1, (2, 2, 2), steps=0)
