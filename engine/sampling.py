r"""Sampling from the score U-Net (spec §2–§3): windows, and whole trajectories by composition.

Both run one predictor–corrector sampler from :math:`x_1 \sim \mathcal N(0, I)` down the
uniform grid :math:`t_i = 1 - i / N`, :math:`i = 0 … N`. With :math:`s = t - 1/N`:

* the predictor is the deterministic DDIM step (exponential integrator of the probability-flow
  ODE in the ε parametrisation),

  .. math:: x \leftarrow r\, x + \big(\sigma(s) - r\, \sigma(t)\big)\, \hat\epsilon(x, t),
      \qquad r = \frac{\mu(s)}{\mu(t)} ;

* the optional corrector is ``corrections`` unadjusted Langevin steps at time :math:`s`, on
  the score :math:`-\hat\epsilon / \sigma(s)`, step size set by τ per sample,

  .. math:: \delta = \frac{\tau}{\operatorname{mean} \hat\epsilon(x, s)^2}, \qquad
      x \leftarrow x - \sigma(s) \big(\delta\, \hat\epsilon(x, s) + \sqrt{2\delta}\, z\big),
      \qquad z \sim \mathcal N(0, I).

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


def predictor_corrector(eps: Estimator, x: Tensor, steps: int, corrections: int = 0,
                        tau: float = 0.5, generator: torch.Generator | None = None) -> Tensor:
    """Integrate from ``x`` at t = 1 to t = 0 in ``steps`` DDIM steps, each followed by
    ``corrections`` Langevin steps; the first axis of ``x`` is the batch."""
    if steps < 1 or corrections < 0:
        raise ValueError(f"need steps ≥ 1 and corrections ≥ 0, got {steps} and {corrections}")
    time = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
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


def sample_windows(model: nn.Module, count: int, shape: tuple[int, ...], steps: int = 64,
                   corrections: int = 0, tau: float = 0.5,
                   generator: torch.Generator | None = None) -> Tensor:
    """``count`` windows of ``shape`` (2w, H, W) from ``model``: (count, 2w, H, W).

    Previews use the defaults: 64 steps, no corrector (spec §3).
    """
    with _evaluating(model) as device:
        x = _randn((count, *shape), generator, device)
        return predictor_corrector(model, x, steps, corrections, tau, generator)


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
                      generator: torch.Generator | None = None, batch_size: int = 64) -> Tensor:
    """``count`` trajectories of ``length`` states of ``shape`` (2, H, W): (count, L, 2, H, W).

    The score of the whole trajectory is composed from the model's windows
    (:func:`composed_noise`); the defaults are the spec's: 256 steps, 1 correction, τ = 0.5.
    """
    with _evaluating(model) as device:
        x = _randn((count, length, *shape), generator, device)
        return predictor_corrector(lambda x, t: composed_noise(model, x, t, batch_size), x,
                                   steps, corrections, tau, generator)
