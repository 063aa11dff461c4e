r"""Sampling from the score U-Net (spec §2–§3): windows, and whole trajectories by composition.

Both run one predictor–corrector sampler from :math:`x_{t_0} \sim \mathcal N(0, \sigma(t_0)^2 I)`
down the uniform grid :math:`t_i = t_0 (1 - i / N)`, :math:`i = 0 … N`; SDA starts at
:math:`t_0 = 1`. With :math:`s` the next point of the grid:

* the predictor is the deterministic DDIM step (exponential integrator of the probability-flow
  ODE in the ε parametrisation),

  .. math:: x \leftarrow r\, x + \big(\sigma(s) - r\, \sigma(t)\big)\, \hat\epsilon(x, t),
      \qquad r = \frac{\mu(s)}{\mu(t)} ;

* the optional corrector is ``corrections`` unadjusted Langevin steps at time :math:`s`, on
  the score :math:`-\hat\epsilon / \sigma(s)`, step size set by τ per sample,

  .. math:: \delta = \frac{\tau}{\operatorname{mean} \hat\epsilon(x, s)^2}, \qquad
      x \leftarrow x - \sigma(s) \big(\delta\, \hat\epsilon(x, s) + \sqrt{2\delta}\, z\big),
      \qquad z \sim \mathcal N(0, I).

Two assessment settings (docs/QUALITY.md) lean less on what an undertrained network gets wrong
near t = 1, where the sampler multiplies ε̂'s error by σ/μ (up to 1000): a start
:math:`t_0 < 1` (at :math:`t_0 = 0.9`, μ = 0.034: the data's part of :math:`x_{t_0}` is a few
percent of its noise), and :func:`zero_mean` (the data have no spatial mean, so the exact ε̂
on that mode is known and replaces the network's).

A trajectory of :math:`L` states longer than the window :math:`w` gets its ε̂ by composing the
:math:`L - w + 1` overlapping windows (SDA's Markov-blanket score): each state takes the output
of the window centred on it; the first and last :math:`\lfloor w/2 \rfloor` states take theirs
from the first and last window.

References:
    | Denoising Diffusion Implicit Models (Song et al., 2021), https://arxiv.org/abs/2010.02502
    | Score-Based Generative Modeling through SDEs (Song et al., 2021),
    | https://arxiv.org/abs/2011.13456
    | Score-based Data Assimilation (Rozet & Louppe, 2023), https://arxiv.org/abs/2306.10574
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import pairwise

import torch
from torch import Tensor, nn

from diffbench.engine.diffusion import mu, sigma

Estimator = Callable[[Tensor, Tensor], Tensor]  # ε̂(x (B, …), t (B,)) → (B, …)


def _randn(shape: tuple[int, ...], generator: torch.Generator | None,
           device: torch.device) -> Tensor:
    """Standard normal draws from ``generator`` on its own device (else the global RNG)."""
    origin = device if generator is None else generator.device
    return torch.randn(shape, generator=generator, device=origin).to(device)


def zero_mean(eps: Estimator) -> Estimator:
    r"""``eps`` with the spatial mean of each field (last two axes) replaced by the exact one.

    Every state of the data has zero mean velocity, so the mean of :math:`x_t` is
    :math:`\sigma(t)\,\bar\epsilon` and the exact :math:`\bar{\hat\epsilon} = \bar x_t /
    \sigma(t)`; the unweighted loss gives that mode weight 1/(H·W) and networks pass only a few
    percent of it (docs/QUALITY.md).
    """
    def estimate(x: Tensor, t: Tensor) -> Tensor:
        e = eps(x, t)
        scale = sigma(t).reshape(-1, *(1,) * (x.ndim - 1)).to(x.dtype)
        return e - e.mean((-2, -1), keepdim=True) + x.mean((-2, -1), keepdim=True) / scale

    return estimate


def predictor_corrector(eps: Estimator, x: Tensor, steps: int, corrections: int = 0,
                        tau: float = 0.5, generator: torch.Generator | None = None,
                        t_start: float = 1.0) -> Tensor:
    """Integrate from ``x`` at ``t_start`` to t = 0 in ``steps`` DDIM steps, each followed by
    ``corrections`` Langevin steps; the first axis of ``x`` is the batch."""
    if steps < 1 or corrections < 0:
        raise ValueError(f"need steps ≥ 1 and corrections ≥ 0, got {steps} and {corrections}")
    if not 0 < t_start <= 1:
        raise ValueError(f"need 0 < t_start ≤ 1, got {t_start}")
    time = torch.linspace(t_start, 0, steps + 1, dtype=torch.float64)
    ones = torch.ones(len(x), device=x.device)  # (B,)
    event = tuple(range(1, x.ndim))
    for t, s in pairwise(time):
        r = mu(s) / mu(t)
        x = r * x + (sigma(s) - r * sigma(t)) * eps(x, t * ones)
        for _ in range(corrections):
            e = eps(x, s * ones)
            delta = tau / e.square().mean(dim=event, keepdim=True)  # (B, 1, …)
            z = _randn(x.shape, generator, x.device)
            x = x - sigma(s) * (delta * e + (2 * delta).sqrt() * z)
    return x


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[torch.device]:
    """Eval mode without gradients, on the model's device; the previous mode comes back."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield next(model.parameters(), torch.empty(0)).device
    finally:
        model.train(training)


def _start(shape: tuple[int, ...], t_start: float, generator: torch.Generator | None,
           device: torch.device) -> Tensor:
    """x at ``t_start``: N(0, σ(t_start)²), the marginal's noise part (σ(1) = 1 exactly)."""
    return _randn(shape, generator, device) * float(sigma(torch.tensor(t_start,
                                                                       dtype=torch.float64)))


def sample_windows(model: nn.Module, count: int, shape: tuple[int, ...], steps: int = 64,
                   corrections: int = 0, tau: float = 0.5,
                   generator: torch.Generator | None = None, *, t_start: float = 1.0,
                   remove_mean: bool = False) -> Tensor:
    """``count`` windows of ``shape`` (2w, H, W) from ``model``: (count, 2w, H, W).

    Previews use the defaults: 64 steps, no corrector (spec §3). ``remove_mean`` uses the
    exact ε̂ on each field's spatial mean (`zero_mean`).
    """
    eps = zero_mean(model) if remove_mean else model
    with _evaluating(model) as device:
        x = _start((count, *shape), t_start, generator, device)
        return predictor_corrector(eps, x, steps, corrections, tau, generator, t_start)


def composed_noise(model: nn.Module, x: Tensor, t: Tensor, batch_size: int = 64) -> Tensor:
    """ε̂ of trajectories ``x`` (B, L, 2, H, W) at ``t`` (B,) from the windows of ``model``.

    The L − w + 1 windows of all trajectories go through the model ``batch_size`` at a time.
    """
    w = model.window
    k = w // 2
    b, length = x.shape[:2]
    if length < w:
        raise ValueError(f"a trajectory of {length} states is shorter than the window {w}")
    windows = x.unfold(1, w, 1).movedim(-1, 2)  # (B, n, w, 2, H, W), n = L − w + 1
    n = windows.shape[1]
    windows = windows.flatten(0, 1).flatten(1, 2)  # (B·n, 2w, H, W)
    times = t.repeat_interleave(n)  # (B·n,)
    e = torch.cat([model(windows[i:i + batch_size], times[i:i + batch_size])
                   for i in range(0, len(windows), batch_size)])  # (B·n, 2w, H, W)
    e = e.unflatten(1, (w, 2)).unflatten(0, (b, n))  # (B, n, w, 2, H, W)
    return torch.cat((e[:, 0, :k], e[:, :, k], e[:, -1, k + 1:]), dim=1)  # (B, L, 2, H, W)


def sample_trajectory(model: nn.Module, length: int, count: int, shape: tuple[int, int, int],
                      steps: int = 256, corrections: int = 1, tau: float = 0.5,
                      generator: torch.Generator | None = None, batch_size: int = 64, *,
                      t_start: float = 1.0, remove_mean: bool = False) -> Tensor:
    """``count`` trajectories of ``length`` states of ``shape`` (2, H, W): (count, L, 2, H, W).

    The score of the whole trajectory is composed from the model's windows
    (:func:`composed_noise`); the defaults are the spec's: 256 steps, 1 correction, τ = 0.5,
    from t = 1, the network's own ε̂ on every mode.
    """
    def eps(x: Tensor, t: Tensor) -> Tensor:
        return composed_noise(model, x, t, batch_size)

    with _evaluating(model) as device:
        x = _start((count, length, *shape), t_start, generator, device)
        return predictor_corrector(zero_mean(eps) if remove_mean else eps, x, steps,
                                   corrections, tau, generator, t_start)
