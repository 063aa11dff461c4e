"""Physical statistics of Kolmogorov-flow data sets (NumPy).

Inputs are velocity fields ``(..., 2, H, W)`` = ([u, v], x, y) on the periodic square
[0, 2π]², as stored in the data sets (``(N, T, 2, H, W)`` for a split). Conventions
(also in docs/DATA.md):

* **Energy spectrum** (:func:`energy_spectrum`): with û = FFT2(u) (unnormalised, NumPy's
  convention) and integer wavenumbers kx, ky ∈ {−H/2, …, H/2−1},
  E(k) = Σ_{round(√(kx²+ky²)) = k} ½(|û|² + |v̂|²) / (H·W)² for k = 1 … H/2.
  By Parseval, Σ_k E(k) over *all* shells (k = 0 and the corners past H/2 included) is the
  kinetic energy ½⟨u² + v²⟩; shells 1 … H/2 hold nearly all of it.
* **Divergence** (:func:`relative_divergence`): spectral, ‖∇·u‖ / ‖∇u‖ with
  ∇·u ↔ i(kx û + ky v̂) and ‖∇u‖² ↔ Σ (kx² + ky²)(|û|² + |v̂|²), Nyquist derivatives set to
  zero. Scale-free, between 0 and 1. The stored 64² fields are block means of a staggered
  field that is exactly divergence-free on the fine grid, so this is small but not zero.
* **Lag-1 autocorrelation**: Pearson correlation of states t and t+1 (0.2 time units apart)
  of the same trajectory, u and v pooled, each centred by its own mean.
* **Mean flow along sin(4y)**: the time-, x- and sample-averaged u(y) projected on sin(4y)
  at cell centres y_j = (j + ½)·2π/W: a = Σ_j ū(y_j) sin(4y_j) / Σ_j sin²(4y_j).
* **Vorticity std**: of the physical curl ∂_x v − ∂_y u (central differences, see
  :mod:`diffbench.engine.vorticity`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from .vorticity import physical_vorticity

__all__ = [
    "REFERENCE_64",
    "FlowStatistics",
    "energy_spectrum",
    "flow_statistics",
    "mean_flow_sin4y",
    "relative_divergence",
    "shell_wavenumbers",
]


@cache
def _wavenumbers(n: int) -> np.ndarray:
    """Integer wavenumbers of an n-point FFT axis: 0, 1, …, n/2−1, −n/2, …, −1."""
    return np.fft.fftfreq(n, d=1.0 / n)


@cache
def _derivative_wavenumbers(n: int) -> np.ndarray:
    """Wavenumbers for spectral derivatives: the Nyquist mode has none (set to 0)."""
    k = _wavenumbers(n).copy()
    if n % 2 == 0:
        k[n // 2] = 0.0
    return k


@cache
def _shell_matrix(h: int, w: int) -> np.ndarray:
    """(H·W, K) one-hot map from Fourier modes to shells k = 1 … K, K = min(H, W)//2."""
    kx, ky = np.meshgrid(_wavenumbers(h), _wavenumbers(w), indexing="ij")
    shell = np.rint(np.hypot(kx, ky)).astype(np.int64).ravel()
    n_shells = min(h, w) // 2
    matrix = np.zeros((h * w, n_shells))
    inside = (shell >= 1) & (shell <= n_shells)
    matrix[np.flatnonzero(inside), shell[inside] - 1] = 1.0
    return matrix


def shell_wavenumbers(size: int) -> np.ndarray:
    """The wavenumbers k = 1 … size//2 that :func:`energy_spectrum` returns, in order."""
    return np.arange(1, size // 2 + 1)


def _check_field(x: np.ndarray) -> None:
    if x.ndim < 3 or x.shape[-3] != 2:
        raise ValueError(f"expected a velocity field (..., 2, H, W), got shape {x.shape}")


def energy_spectrum(x: np.ndarray) -> np.ndarray:
    """Shell-averaged kinetic energy spectrum of ``x`` (…, 2, H, W) → (…, H//2).

    Entry ``[..., k−1]`` is E(k) = Σ_{shell k} ½(|û|² + |v̂|²)/(H·W)², shells by
    round(|k|); leading dimensions are kept (average them yourself).
    """
    x = np.asarray(x, dtype=np.float64)
    _check_field(x)
    h, w = x.shape[-2:]
    power = 0.5 * (np.abs(np.fft.fft2(x)) ** 2).sum(axis=-3) / float(h * w) ** 2  # (..., H, W)
    lead = power.shape[:-2]
    spectrum = power.reshape(-1, h * w) @ _shell_matrix(h, w)
    return spectrum.reshape(*lead, -1)


def _divergence_sums(x: np.ndarray) -> tuple[float, float]:
    """Σ|FFT(∇·u)|² and Σ|FFT(∇u)|² over all of ``x`` (…, 2, H, W)."""
    h, w = x.shape[-2:]
    kx = _derivative_wavenumbers(h)[:, None]
    ky = _derivative_wavenumbers(w)[None, :]
    spec = np.fft.fft2(np.asarray(x, dtype=np.float64))
    u_hat, v_hat = spec[..., 0, :, :], spec[..., 1, :, :]
    div = np.abs(kx * u_hat + ky * v_hat) ** 2
    grad = (kx**2 + ky**2) * (np.abs(u_hat) ** 2 + np.abs(v_hat) ** 2)
    return float(div.sum()), float(grad.sum())


def relative_divergence(x: np.ndarray) -> float:
    """Spectral ‖∇·u‖ / ‖∇u‖ over all fields of ``x`` (…, 2, H, W); 0 for a still field."""
    x = np.asarray(x)
    _check_field(x)
    div, grad = _divergence_sums(x)
    return float(np.sqrt(div / grad)) if grad > 0 else 0.0


def _sin4y(w: int) -> np.ndarray:
    y = (np.arange(w) + 0.5) * 2 * np.pi / w
    return np.sin(4 * y)


def mean_flow_sin4y(profile: np.ndarray) -> float:
    """Amplitude a of the best fit a·sin(4y) to a mean profile ū(y_j), y_j = (j+½)·2π/W."""
    profile = np.asarray(profile, dtype=np.float64)
    basis = _sin4y(profile.shape[-1])
    return float(profile @ basis / (basis @ basis))


@dataclass(frozen=True)
class FlowStatistics:
    """Summary statistics of a split; see the module docstring for every convention."""

    trajectories: int
    states: int
    u_std: float
    v_std: float
    kinetic_energy: float
    vorticity_std: float
    lag1_autocorrelation: float | None  # None when trajectories hold a single state
    divergence: float
    mean_flow_sin4y: float
    spectrum: tuple[float, ...]  # E(1), …, E(H/2)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"spectrum": list(self.spectrum)}


class _Moments:
    """Running Σx, Σx² (float64) for means and variances without a second pass."""

    def __init__(self, shape: tuple[int, ...] = ()) -> None:
        self.n = 0
        self.s = np.zeros(shape)
        self.s2 = np.zeros(shape)

    def add(self, values: np.ndarray, axis: tuple[int, ...]) -> None:
        self.n += int(np.prod([values.shape[a] for a in axis]))
        self.s += values.sum(axis=axis)
        self.s2 += (values * values).sum(axis=axis)

    @property
    def mean(self) -> np.ndarray:
        return self.s / self.n

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.s2 / self.n - self.mean**2, 0.0)


def flow_statistics(data: Any, *, chunk: int = 8) -> FlowStatistics:
    """Statistics of a split ``data`` of shape (N, T, 2, H, W).

    ``data`` may be anything with ``.shape`` that returns arrays when sliced along its
    first axis (a NumPy array, an ``h5py.Dataset``); it is read ``chunk`` trajectories at a
    time, so memory stays bounded for the paper-sized splits.
    """
    n, t, c, h, w = data.shape
    if c != 2:
        raise ValueError(f"expected (N, T, 2, H, W), got shape {data.shape}")
    if n == 0 or t == 0:
        raise ValueError("statistics of an empty split")

    velocity = _Moments((2,))
    vort = _Moments()
    profile = np.zeros(w)
    spectrum = np.zeros(min(h, w) // 2)
    div_sum = grad_sum = 0.0
    # lag-1 sums per component: Σa, Σb, Σab, Σa², Σb² over pairs (t, t+1)
    lag = np.zeros((5, 2))
    pairs = 0

    for start in range(0, n, chunk):
        x = np.asarray(data[start : start + chunk], dtype=np.float64)  # (B, T, 2, H, W)
        velocity.add(x, axis=(0, 1, 3, 4))
        vort.add(physical_vorticity(x), axis=(0, 1, 2, 3))
        profile += x[:, :, 0].sum(axis=(0, 1, 2))
        spectrum += energy_spectrum(x).sum(axis=(0, 1))
        d, g = _divergence_sums(x)
        div_sum, grad_sum = div_sum + d, grad_sum + g
        if t > 1:
            a, b = x[:, :-1], x[:, 1:]
            axes = (0, 1, 3, 4)
            lag += np.stack(
                [a.sum(axes), b.sum(axes), (a * b).sum(axes), (a * a).sum(axes), (b * b).sum(axes)]
            )
            pairs += a.shape[0] * a.shape[1] * h * w

    states = n * t
    u_var, v_var = velocity.var
    mean_sq = velocity.s2 / velocity.n  # ⟨u²⟩, ⟨v²⟩ (mean flow included)
    autocorr = None
    if pairs:
        sa, sb, sab, saa, sbb = lag / pairs
        cov = (sab - sa * sb).sum()
        autocorr = float(cov / np.sqrt((saa - sa**2).sum() * (sbb - sb**2).sum()))

    return FlowStatistics(
        trajectories=n,
        states=states,
        u_std=float(np.sqrt(u_var)),
        v_std=float(np.sqrt(v_var)),
        kinetic_energy=float(0.5 * mean_sq.sum()),
        vorticity_std=float(np.sqrt(vort.var)),
        lag1_autocorrelation=autocorr,
        divergence=float(np.sqrt(div_sum / grad_sum)) if grad_sum > 0 else 0.0,
        mean_flow_sin4y=mean_flow_sin4y(profile / (states * h)),
        spectrum=tuple(float(e) for e in spectrum / states),
    )


#: Statistics of the reference data (jax-cfd, 8 trajectories at 64²), spec §1; the paper
#: preset must match them. ``spectrum`` maps a wavenumber k to E(k).
REFERENCE_64: dict[str, Any] = {
    "u_std": 0.99,
    "v_std": 0.94,
    "kinetic_energy": 0.93,
    "vorticity_std": 4.1,
    "lag1_autocorrelation": 0.97,
    "spectrum": {1: 0.24, 2: 0.27, 3: 0.16, 4: 0.18, 5: 0.034, 6: 0.018, 7: 0.0075, 8: 0.0046,
                 16: 1.8e-4, 32: 2.5e-6},
}
