r"""Sample quality, measured: generated trajectories against held-out data (docs/QUALITY.md).

The paper judged samples by eye ("grainy vorticity"); these four numbers judge them in the
data's physical units (the data sets are not normalised and the model trains on them as
stored, so samples need no un-normalising). ``g`` is the generated set, ``d`` the reference
(the test split), both velocity fields ``(N, T, 2, H, W)``:

* **spectrum_error**: relative L2 distance of the log energy spectra over the resolved
  wavenumbers k = 1 … H/2 (every full shell of the grid),
  :math:`\|\log E_g - \log E_d\|_2 / \|\log E_d\|_2`, E averaged over all states;
* **vorticity_w1**: 1-Wasserstein distance between the distributions of physical vorticity
  values, :math:`\int_0^1 |F_g^{-1}(q) - F_d^{-1}(q)|\,dq`, divided by the data's vorticity
  std (scale-free);
* **divergence_ratio**: :math:`D(g) / D(d)` with D the spectral relative divergence
  ‖∇·u‖ / ‖∇u‖ of `statistics.relative_divergence`;
* **dynamics_error**: :math:`e(g) / e(d)` with
  :math:`e(x) = \sqrt{\sum_t \|\Phi(x_t) - x_{t+1}\|^2 / \sum_t \|x_{t+1}\|^2}` and Φ the
  solver advancing a stored state by one stored interval on the stored grid.

"Like data" is 0 for the first two and 1 for the last two; larger is worse for all four
except that a divergence ratio below 1 is as unlike the data as one above.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import DataConfig, QualityConfig
from .kolmogorov import advance
from .sampling import sample_trajectory
from .statistics import flow_statistics, shell_wavenumbers
from .vorticity import physical_vorticity

__all__ = ["QualityScores", "assess", "generate", "score", "transition_error", "wasserstein_1"]


@dataclass(frozen=True, eq=False)
class QualityScores:
    """The four scores of a generated set, its size, the time it took, and both spectra.

    ``spectrum`` holds lists ``k``, ``generated`` and ``data`` (mean E(k) over states).
    """

    spectrum_error: float
    vorticity_w1: float
    divergence_ratio: float
    dynamics_error: float
    trajectories: int
    length: int
    seconds: float
    spectrum: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (non-finite floats stay floats; the sinks encode them)."""
        return asdict(self)


def wasserstein_1(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance between the empirical distributions of the values of ``a`` and
    ``b`` (any shapes, any sizes): ∫ |F_a(x) − F_b(x)| dx, exact, from the sorted samples."""
    a = np.sort(np.asarray(a, dtype=np.float64).ravel())
    b = np.sort(np.asarray(b, dtype=np.float64).ravel())
    if a.size == 0 or b.size == 0:
        raise ValueError("W1 of an empty sample")
    values = np.concatenate((a, b))
    values.sort()
    widths = np.diff(values)  # the CDFs are constant on each gap between sorted values
    cdf_a = np.searchsorted(a, values[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, values[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * widths))


def _physics(data: DataConfig) -> dict[str, float]:
    """`kolmogorov.advance` keywords of the data set's physics and inner time step."""
    return {"viscosity": data.viscosity, "drag": data.drag,
            "forcing_amplitude": data.forcing_amplitude,
            "forcing_wavenumber": float(data.forcing_wavenumber), "dt": data.dt}


def transition_error(x: np.ndarray, data: DataConfig, *, device: torch.device | str = "cpu",
                     chunk: int = 256) -> float:
    """e(x): relative L2 misfit of each stored state advanced one interval by the solver
    against the next stored state, pooled over all pairs of trajectories ``x`` (N, T, 2, H, W).

    The solver runs on the stored grid with the data set's time step and inner steps; stored
    fields are block means of a finer simulation, so even real data have e > 0.
    """
    if x.ndim != 5 or x.shape[1] < 2:
        raise ValueError(f"need trajectories (N, T ≥ 2, 2, H, W), got shape {x.shape}")
    states = np.ascontiguousarray(x[:, :-1]).reshape(-1, *x.shape[2:])
    targets = np.ascontiguousarray(x[:, 1:]).reshape(-1, *x.shape[2:])
    misfit = energy = 0.0
    with torch.no_grad(), torch.autocast(torch.device(device).type, enabled=False):
        for i in range(0, len(states), chunk):
            state = torch.from_numpy(states[i:i + chunk]).to(device, torch.float32)
            target = torch.from_numpy(targets[i:i + chunk]).to(device, torch.float64)
            moved = advance(state, data.inner_steps, **_physics(data)).double()
            misfit += float((moved - target).square().sum())
            energy += float(target.square().sum())
    if not math.isfinite(misfit):  # the solver blew up on these fields: unlike data, unbounded
        return math.inf
    return math.sqrt(misfit / energy) if energy > 0 else math.nan


def _log_distance(generated: np.ndarray, data: np.ndarray) -> float:
    """‖log g − log d‖ / ‖log d‖ (natural logs; the ratio does not depend on the base)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_g, log_d = np.log(generated), np.log(data)
        return float(np.linalg.norm(log_g - log_d) / np.linalg.norm(log_d))


def _vorticity_values(x: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Every physical vorticity value of ``x`` (N, T, 2, H, W) as float32, a chunk at a time."""
    return np.concatenate([physical_vorticity(x[i:i + chunk]).astype(np.float32).ravel()
                           for i in range(0, len(x), chunk)])


def score(generated: np.ndarray, reference: np.ndarray, data: DataConfig, *,
          device: torch.device | str = "cpu") -> QualityScores:
    """The scores of ``generated`` against ``reference``, both (N, T ≥ 2, 2, H, W) velocity
    fields in physical units on the same grid; ``data`` gives the solver its physics and
    ``device`` runs it. ``seconds`` is the time this call took."""
    began = time.perf_counter()
    generated = np.asarray(generated, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if generated.ndim != 5 or generated.shape[2:] != reference.shape[2:]:
        raise ValueError(f"generated {generated.shape} and reference {reference.shape} must be "
                         "trajectories (N, T, 2, H, W) on the same grid")
    mine = flow_statistics(generated)
    theirs = flow_statistics(reference)
    e_generated, e_data = np.array(mine.spectrum), np.array(theirs.spectrum)
    w1 = wasserstein_1(_vorticity_values(generated), _vorticity_values(reference))
    return QualityScores(
        spectrum_error=_log_distance(e_generated, e_data),
        vorticity_w1=w1 / theirs.vorticity_std,
        divergence_ratio=mine.divergence / theirs.divergence,
        dynamics_error=(transition_error(generated, data, device=device)
                        / transition_error(reference, data, device=device)),
        trajectories=generated.shape[0],
        length=generated.shape[1],
        seconds=time.perf_counter() - began,
        spectrum={"k": shell_wavenumbers(generated.shape[-1]).astype(float).tolist(),
                  "generated": e_generated.tolist(), "data": e_data.tolist()},
    )


def generate(model: nn.Module, quality: QualityConfig, size: int, *,
             generator: torch.Generator | None = None, batch_size: int = 64) -> np.ndarray:
    """``quality.trajectories`` trajectories of ``quality.length`` states (N, L, 2, H, W),
    float32 NumPy, sampled with the assessment's steps and corrections."""
    x = sample_trajectory(model, quality.length, quality.trajectories, (2, size, size),
                          steps=quality.steps, corrections=quality.corrections,
                          tau=quality.tau, generator=generator, batch_size=batch_size)
    return x.float().cpu().numpy()


def assess(model: nn.Module, reference: np.ndarray, data: DataConfig, quality: QualityConfig,
           *, generator: torch.Generator | None = None, batch_size: int = 64) -> QualityScores:
    """Sample from ``model`` (`generate`) and `score` the samples against ``reference`` (the
    test split); ``seconds`` covers both. Draws only from ``generator``, never the global RNG,
    so assessing a run changes nothing another part of it reads."""
    began = time.perf_counter()
    device = next(model.parameters()).device
    generated = generate(model, quality, reference.shape[-1], generator=generator,
                         batch_size=batch_size)
    scores = score(generated, reference, data, device=device)
    return replace(scores, seconds=time.perf_counter() - began)
