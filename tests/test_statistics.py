"""Statistics and vorticity on fields whose answers are known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffbench.engine.statistics import (
    REFERENCE_64,
    energy_spectrum,
    flow_statistics,
    mean_flow_sin4y,
    relative_divergence,
    shell_wavenumbers,
)
from diffbench.engine.vorticity import display_vorticity, physical_vorticity, vorticity

N = 32


def grid(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """Cell-centre coordinates x (axis −2) and y (axis −1) on [0, 2π)²."""
    c = (np.arange(n) + 0.5) * 2 * np.pi / n
    return np.meshgrid(c, c, indexing="ij")


def field(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.stack([u, v])  # (2, H, W)


def solenoidal(rng: np.random.Generator, n: int = N, batch: int = 3) -> np.ndarray:
    """Random divergence-free fields (batch, 2, n, n) from a band-limited stream function."""
    k = np.fft.fftfreq(n, 1 / n)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    psi_hat = np.fft.fft2(rng.standard_normal((batch, n, n))) * (np.hypot(kx, ky) < n / 3)
    u = np.fft.ifft2(1j * ky * psi_hat).real  # u = ∂ψ/∂y, v = −∂ψ/∂x
    v = np.fft.ifft2(-1j * kx * psi_hat).real
    return np.stack([u, v], axis=1)


def test_vorticity_of_shear_flows_matches_the_curl():
    x, y = grid()
    h = 2 * np.pi / N
    # u = sin y: ω = ∂x v − ∂y u = −cos y; central differences give −cos y · sin(h)/h
    w = physical_vorticity(field(np.sin(y), 0 * y))
    np.testing.assert_allclose(w, -np.cos(y) * math.sin(h) / h, atol=1e-12)
    # v = sin x: ω = cos x
    w = physical_vorticity(field(0 * x, np.sin(x)))
    np.testing.assert_allclose(w, np.cos(x) * math.sin(h) / h, atol=1e-12)
    # the picture convention is ∂y u − ∂x v in index units: −ω·h
    np.testing.assert_allclose(vorticity(field(0 * x, np.sin(x))), -np.cos(x) * math.sin(h),
                               atol=1e-12)


def test_vorticity_is_periodic_and_keeps_batch_dims():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 2, 8, 8))
    w = vorticity(x)
    assert w.shape == (4, 3, 8, 8)
    # a circular shift of the input shifts the output: no boundary treatment
    np.testing.assert_allclose(vorticity(np.roll(x, 3, axis=-1)), np.roll(w, 3, axis=-1))
    with pytest.raises(ValueError, match=r"\(\.\.\., 2, H, W\)"):
        vorticity(rng.standard_normal((3, 8, 8)))


def test_display_vorticity_clips_and_applies_contrast():
    w = np.array([-5.0, -1.25, -0.625, 0.0, 0.625, 1.25, 5.0])
    d = display_vorticity(w)
    np.testing.assert_allclose(d, [-1, -1, -(0.5**0.8), 0, 0.5**0.8, 1, 1])


@pytest.mark.parametrize("k", [1, 3, 7])
def test_single_mode_lands_in_its_shell(k):
    _, y = grid()
    amplitude = 0.7
    e = energy_spectrum(field(amplitude * np.sin(k * y), 0 * y))
    expected = np.zeros(N // 2)
    expected[k - 1] = amplitude**2 / 4  # ½⟨u²⟩ = ½·A²/2
    np.testing.assert_allclose(e, expected, atol=1e-14)


def test_spectrum_sums_to_kinetic_energy_and_keeps_leading_dims():
    x = solenoidal(np.random.default_rng(1), batch=5)  # band-limited below N/3: all in shells
    e = energy_spectrum(x)
    assert e.shape == (5, N // 2)
    np.testing.assert_allclose(e.sum(axis=-1), 0.5 * (x**2).sum(axis=1).mean(axis=(-2, -1)))
    np.testing.assert_array_equal(shell_wavenumbers(N), np.arange(1, N // 2 + 1))


def test_divergence_is_zero_for_solenoidal_and_one_for_potential_fields():
    rng = np.random.default_rng(2)
    assert relative_divergence(solenoidal(rng)) < 1e-12
    # u = ∇φ: |∇·u| = |k|²|φ̂| = ‖∇u‖, so the ratio is exactly 1
    k = np.fft.fftfreq(N, 1 / N)
    k[N // 2] = 0
    kx, ky = np.meshgrid(k, k, indexing="ij")
    phi_hat = np.fft.fft2(rng.standard_normal((N, N)))
    potential = field(np.fft.ifft2(1j * kx * phi_hat).real, np.fft.ifft2(1j * ky * phi_hat).real)
    assert relative_divergence(potential) == pytest.approx(1.0, rel=1e-9)
    assert relative_divergence(np.zeros((2, N, N))) == 0.0


def test_mean_flow_projection_recovers_the_sin4y_amplitude():
    y = (np.arange(N) + 0.5) * 2 * np.pi / N
    assert mean_flow_sin4y(0.8 * np.sin(4 * y) + 0.3 * np.cos(2 * y)) == pytest.approx(0.8)


def synthetic_split(rng: np.random.Generator, n: int = 5, t: int = 6) -> np.ndarray:
    """(n, t, 2, N, N): slowly drifting solenoidal fields plus a mean flow 0.5 sin(4y)."""
    base = solenoidal(rng, batch=n)
    drift = solenoidal(rng, batch=n)
    times = np.arange(t)[None, :, None, None, None] * 0.05
    x = base[:, None] + times * drift[:, None]
    _, y = grid()
    x[:, :, 0] += 0.5 * np.sin(4 * y)
    return x.astype(np.float32)


def test_flow_statistics_match_direct_formulas():
    data = synthetic_split(np.random.default_rng(3))
    s = flow_statistics(data, chunk=2)
    x = data.astype(np.float64)
    assert (s.trajectories, s.states) == (5, 30)
    assert s.u_std == pytest.approx(x[:, :, 0].std(), rel=1e-9)
    assert s.v_std == pytest.approx(x[:, :, 1].std(), rel=1e-9)
    assert s.kinetic_energy == pytest.approx(0.5 * (x**2).sum(axis=2).mean(), rel=1e-9)
    assert s.vorticity_std == pytest.approx(physical_vorticity(x).std(), rel=1e-9)
    a, b = x[:, :-1], x[:, 1:]
    ca = a - a.mean(axis=(0, 1, 3, 4), keepdims=True)
    cb = b - b.mean(axis=(0, 1, 3, 4), keepdims=True)
    pearson = (ca * cb).sum() / np.sqrt((ca**2).sum() * (cb**2).sum())
    assert s.lag1_autocorrelation == pytest.approx(pearson, rel=1e-9)
    assert 0.5 < s.lag1_autocorrelation < 1
    assert s.divergence < 1e-6  # float32 round-off of a divergence-free field
    assert s.mean_flow_sin4y == pytest.approx(mean_flow_sin4y(x[:, :, 0].mean(axis=(0, 1, 2))),
                                              rel=1e-9)
    np.testing.assert_allclose(s.spectrum, energy_spectrum(x).mean(axis=(0, 1)), rtol=1e-9)


def test_flow_statistics_is_independent_of_chunking():
    data = synthetic_split(np.random.default_rng(4))
    one, all_ = flow_statistics(data, chunk=1), flow_statistics(data, chunk=64)
    for key, value in one.as_dict().items():
        assert value == pytest.approx(all_.as_dict()[key], rel=1e-9, abs=1e-15), key


def test_autocorrelation_of_frozen_and_flipping_trajectories():
    data = synthetic_split(np.random.default_rng(5), t=1)
    assert flow_statistics(data).lag1_autocorrelation is None
    frozen = np.repeat(data, 4, axis=1)
    assert flow_statistics(frozen).lag1_autocorrelation == pytest.approx(1.0)
    flipping = frozen * np.array([1, -1, 1, -1])[None, :, None, None, None]
    flipping -= flipping.mean(axis=(0, 1, 3, 4), keepdims=True)
    assert flow_statistics(flipping).lag1_autocorrelation < -0.9


def test_statistics_reject_bad_shapes():
    with pytest.raises(ValueError, match="N, T, 2, H, W"):
        flow_statistics(np.zeros((2, 3, 3, 8, 8)))
    with pytest.raises(ValueError, match="empty"):
        flow_statistics(np.zeros((0, 3, 2, 8, 8)))


def test_reference_spectrum_follows_the_documented_normalisation():
    """The spec's E(1..8) sum to about its kinetic energy, as E(k) = Σ_shell ½|û|²/(HW)² does."""
    head = sum(REFERENCE_64["spectrum"][k] for k in range(1, 9))
    assert head == pytest.approx(REFERENCE_64["kinetic_energy"], rel=0.05)
