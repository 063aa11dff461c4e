r"""The diffusion objective (spec §3): a variance-preserving process with a cosine schedule.

.. math::
    x_t = \mu(t)\, x + \sigma(t)\, \epsilon, \qquad \epsilon \sim \mathcal N(0, I), \qquad
    \mu(t) = \cos\big(\arccos(\sqrt\eta)\, t\big)^2, \qquad
    \sigma(t) = \sqrt{1 - \mu(t)^2 + \eta^2}

with :math:`\eta = 10^{-3}`, so :math:`\mu(0) = 1, \sigma(0) = \eta` and
:math:`\mu(1) = \eta, \sigma(1) = 1`. The network learns the noise by the unweighted
denoising loss

.. math:: \ell = \mathbb E_{t \sim U(0, 1),\, \epsilon}
    \big\| \hat\epsilon(\mu(t) x + \sigma(t) \epsilon, t) - \epsilon \big\|^2 ,

averaged over all elements. Validation reports it twice: stochastic (fresh t and ε each time)
and with fixed noise (:class:`FixedNoise`: one window, t and ε per validation trajectory, drawn
once from a fixed seed), so the curves of different runs are comparable point by point.

References:
    | Score-based Data Assimilation (Rozet & Louppe, 2023), https://arxiv.org/abs/2306.10574
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

ETA = 1e-3
FIXED_SEED = 0  # seed of the fixed-noise validation set, the same for every run

EpsilonModel = Callable[[Tensor, Tensor], Tensor]  # ε̂(x_t (B, …), t (B,)) → (B, …)


def mu(t: Tensor) -> Tensor:
    r""":math:`\mu(t) = \cos(\arccos(\sqrt\eta)\, t)^2`."""
    return torch.cos(math.acos(math.sqrt(ETA)) * t) ** 2


def sigma(t: Tensor) -> Tensor:
    r""":math:`\sigma(t) = \sqrt{1 - \mu(t)^2 + \eta^2}`."""
    return (1 - mu(t) ** 2 + ETA**2).sqrt()


def perturb(x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    r"""A sample of :math:`p(x_t \mid x)`: :math:`\mu(t) x + \sigma(t) \epsilon`, ``t`` (B,)."""
    t = t.reshape(-1, *(1,) * (x.ndim - 1))  # (B, 1, …)
    return mu(t) * x + sigma(t) * eps


def noise_loss(model: EpsilonModel, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    r"""Mean of :math:`(\hat\epsilon(x_t, t) - \epsilon)^2` over all elements, in float32."""
    return (model(perturb(x, t, eps), t).float() - eps.float()).square().mean()


def draw_noise(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """``t ~ U(0, 1)`` (B,) and ``ε ~ N(0, I)`` like ``x``, on ``x``'s device and dtype.

    Drawn from ``generator`` on the generator's own device (then moved), else from the global
    RNG of ``x``'s device, so a trainer that owns the generator owns the noise.
    """
    device = x.device if generator is None else generator.device
    t = torch.rand(len(x), generator=generator, device=device, dtype=x.dtype)
    eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return t.to(x.device), eps.to(x.device)


def denoising_loss(model: EpsilonModel, x: Tensor,
                   generator: torch.Generator | None = None) -> Tensor:
    r"""The training loss on clean windows ``x`` (B, 2L, H, W): fresh :math:`t, \epsilon`."""
    t, eps = draw_noise(x, generator)
    return noise_loss(model, x, t, eps)


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    if count < 1 or batch_size < 1:
        raise ValueError(f"need samples and a positive batch size, got {count} and {batch_size}")
    return (slice(i, min(i + batch_size, count)) for i in range(0, count, batch_size))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _evaluate(model: nn.Module, batch_losses: Iterator[tuple[Tensor, int]]) -> float:
    """Sample-weighted mean of per-batch mean losses, in eval mode without gradients."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            total, count = 0.0, 0
            for loss, n in batch_losses:
                total, count = total + loss.double() * n, count + n
        return float(total / count)
    finally:
        model.train(training)


def validation_loss(model: nn.Module, windows: Tensor, generator: torch.Generator,
                    batch_size: int = 64) -> float:
    r"""The stochastic validation loss of clean ``windows`` (N, 2L, H, W): fresh :math:`t,
    \epsilon` from ``generator``, evaluated in batches on the model's device."""
    device = _device(model)

    def losses() -> Iterator[tuple[Tensor, int]]:
        for b in _batches(len(windows), batch_size):
            x = windows[b].to(device)
            yield denoising_loss(model, x, generator), len(x)

    return _evaluate(model, losses())


@dataclass(frozen=True)
class FixedNoise:
    r"""The fixed-noise validation set: per trajectory one window, :math:`t` and :math:`\epsilon`.

    ``noisy`` holds :math:`x_t = \mu(t) x + \sigma(t) \epsilon` (N, 2L, H, W), ``t`` (N,) and
    ``eps`` (N, 2L, H, W); ``starts`` (N,) records each window's first state.
    """

    noisy: Tensor
    t: Tensor
    eps: Tensor
    starts: Tensor

    @classmethod
    def draw(cls, trajectories: Tensor, window: int, seed: int = FIXED_SEED) -> FixedNoise:
        """Draw once, on the CPU, from ``trajectories`` (N, T, 2, H, W) and its own generator.

        Window starts, then t, then ε, all from ``torch.Generator().manual_seed(seed)``: the
        same data and seed give the same set in every run and process, whatever the global RNG.
        """
        if trajectories.ndim != 5 or trajectories.shape[2] != 2:
            raise ValueError(f"expected trajectories (N, T, 2, H, W), "
                             f"got {tuple(trajectories.shape)}")
        n, length, _, h, w = trajectories.shape
        if not 0 < window <= length:
            raise ValueError(f"window {window} does not fit trajectories of {length}")
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(length - window + 1, (n,), generator=generator)
        t = torch.rand(n, generator=generator)
        eps = torch.randn(n, 2 * window, h, w, generator=generator)
        time = starts[:, None] + torch.arange(window)  # (N, L)
        x = trajectories.cpu().float()[torch.arange(n)[:, None], time]  # (N, L, 2, H, W)
        x = x.flatten(1, 2)  # (N, 2L, H, W)
        return cls(noisy=perturb(x, t, eps), t=t, eps=eps, starts=starts)

    def __len__(self) -> int:
        return len(self.t)

    def to(self, device: torch.device) -> FixedNoise:
        """The same set on ``device`` (validation then reads it without host copies)."""
        return FixedNoise(*(v.to(device) for v in (self.noisy, self.t, self.eps, self.starts)))


def fixed_noise_loss(model: nn.Module, fixed: FixedNoise, batch_size: int = 64) -> float:
    r"""Mean of :math:`(\hat\epsilon(x_t, t) - \epsilon)^2` on the fixed-noise set, batched."""
    device = _device(model)

    def losses() -> Iterator[tuple[Tensor, int]]:
        for b in _batches(len(fixed), batch_size):
            noisy, t, eps = (v[b].to(device) for v in (fixed.noisy, fixed.t, fixed.eps))
            yield (model(noisy, t).float() - eps).square().mean(), len(t)

    return _evaluate(model, losses())
