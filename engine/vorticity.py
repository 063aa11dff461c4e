"""Vorticity of velocity fields, for pictures and for statistics (NumPy).

Fields are laid out as the data sets store them: ``(..., 2, H, W)`` with channel 0 = u,
channel 1 = v, axis −2 = x and axis −1 = y, periodic in both (spec §1, §3).

Two conventions live here, on purpose kept apart:

* :func:`vorticity` is the *picture* vorticity of the reference code (SDA's
  ``vorticity``): ω_plot = ∂_y u − ∂_x v by central differences in index units.
  It is what :func:`display_vorticity` and the terminal previews colour.
* :func:`physical_vorticity` is the curl ω = ∂_x v − ∂_y u in physical units on the
  domain [0, 2π]², also by central differences. So ω_plot = −ω·Δx with Δx = 2π/H.
  Its standard deviation is the "vorticity std" of the statistics (≈ 4.1 at 64²).
"""

from __future__ import annotations

import math

import numpy as np

CLIP = 1.25  # |ω_plot| mapped to the ends of the colormap (spec §3)
GAMMA = 0.8  # contrast: sign(w)·|w|**GAMMA


def _central(f: np.ndarray, axis: int) -> np.ndarray:
    """Circular central difference (f[i+1] − f[i−1]) / 2 along ``axis``, index units."""
    return 0.5 * (np.roll(f, -1, axis=axis) - np.roll(f, 1, axis=axis))


def vorticity(x: np.ndarray) -> np.ndarray:
    """Picture vorticity ω_plot = ∂_y u − ∂_x v of ``x`` (…, 2, H, W) → (…, H, W).

    Central differences in index units with periodic wrap-around, as the reference's
    plotting code computes it.
    """
    x = np.asarray(x)
    if x.ndim < 3 or x.shape[-3] != 2:
        raise ValueError(f"expected a velocity field (..., 2, H, W), got shape {x.shape}")
    u, v = x[..., 0, :, :], x[..., 1, :, :]
    return _central(u, axis=-1) - _central(v, axis=-2)


def physical_vorticity(x: np.ndarray, length: float = 2 * math.pi) -> np.ndarray:
    """Curl ω = ∂_x v − ∂_y u in physical units on a periodic square of side ``length``.

    Central differences divided by the grid spacing Δx = length / H (the grid is square).
    """
    x = np.asarray(x)
    spacing = length / x.shape[-2]
    return -vorticity(x) / spacing


def display_vorticity(w: np.ndarray) -> np.ndarray:
    """Map picture vorticity to [−1, 1] for a diverging colormap.

    Clips to ±1.25, rescales to ±1 and applies the contrast sign(w)·|w|^0.8 (spec §3).
    """
    w = np.clip(np.asarray(w, dtype=np.float64) / CLIP, -1.0, 1.0)
    return np.sign(w) * np.abs(w) ** GAMMA
