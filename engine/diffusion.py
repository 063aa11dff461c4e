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
once from a fixed seed), so the curves of different runs are comparable point by point. The
fixed-noise loss is also measured by noise level (:func:`binned_noise`, :func:`binned_loss`):
the same windows and ε at a fixed t in each bin of :data:`LOSS_BINS`. The sampler multiplies
ε̂'s error by σ/μ (29 at t = 0.9, 1000 at t = 1), so the bins near t = 1, a sliver of the
unweighted mean, are where sample quality is decided.

References:
    | Score-based Data Assimilation (Rozet & Louppe, 2023), https://arxiv.org/abs/2306.10574
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise

import torch
from torch import Tensor, nn

ETA = 1e-3
FIXED_SEED = 0  # seed of the fixed-noise validation set, the same for every run
BINNED_SEED = 1  # seed of the binned set
#: Edges of the t-bins of the binned validation loss, finer towards t = 1 (see above).
LOSS_BINS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0)
BIN_WINDOWS = 16  # windows per bin: the same windows and ε in every bin

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
        n, length = _check_trajectories(trajectories, window)
        generator = torch.Generator().manual_seed(seed)
        starts = torch.randint(length - window + 1, (n,), generator=generator)
        t = torch.rand(n, generator=generator)
        x = _windows(trajectories, torch.arange(n), starts, window)
        eps = torch.randn(x.shape, generator=generator)
        return cls(noisy=perturb(x, t, eps), t=t, eps=eps, starts=starts)

    def __len__(self) -> int:
        return len(self.t)

    def to(self, device: torch.device) -> FixedNoise:
        """The same set on ``device`` (validation then reads it without host copies)."""
        return FixedNoise(*(v.to(device) for v in (self.noisy, self.t, self.eps, self.starts)))


def _check_trajectories(trajectories: Tensor, window: int) -> tuple[int, int]:
    """(N, T) of ``trajectories`` (N, T, 2, H, W) that hold windows of ``window`` states."""
    if trajectories.ndim != 5 or trajectories.shape[2] != 2:
        raise ValueError(f"expected trajectories (N, T, 2, H, W), "
                         f"got {tuple(trajectories.shape)}")
    n, length = trajectories.shape[:2]
    if not 0 < window <= length:
        raise ValueError(f"window {window} does not fit trajectories of {length}")
    return n, length


def _windows(trajectories: Tensor, which: Tensor, starts: Tensor, window: int) -> Tensor:
    """Windows (M, 2L, H, W) of trajectories ``which`` (M,) from ``starts`` (M,), fp32 CPU."""
    time = starts[:, None] + torch.arange(window)  # (M, L)
    return trajectories.cpu().float()[which[:, None], time].flatten(1, 2)


def binned_noise(trajectories: Tensor, window: int, edges: tuple[float, ...] = LOSS_BINS,
                 count: int = BIN_WINDOWS, seed: int = BINNED_SEED) -> FixedNoise:
    r"""The binned set: ``count`` windows with their ε, each noised at one t per bin.

    Entry ``b · count + i`` is window i at a t drawn uniformly in bin b
    (``edges[b] … edges[b+1]``); windows (trajectories drawn with replacement, then starts),
    ε and t come from ``torch.Generator().manual_seed(seed)``, so the set is the same in every
    run and the bins differ only in t: their losses compare like for like.
    """
    n, length = _check_trajectories(trajectories, window)
    if len(edges) < 2 or any(b <= a for a, b in pairwise(edges)) \
            or edges[0] < 0 or edges[-1] > 1:
        raise ValueError(f"bin edges must increase within [0, 1], got {edges}")
    generator = torch.Generator().manual_seed(seed)
    which = torch.randint(n, (count,), generator=generator)
    starts = torch.randint(length - window + 1, (count,), generator=generator)
    x = _windows(trajectories, which, starts, window)
    eps = torch.randn(x.shape, generator=generator)
    low, high = torch.tensor(edges[:-1]), torch.tensor(edges[1:])  # (K,)
    t = low[:, None] + (high - low)[:, None] * torch.rand(len(low), count, generator=generator)
    bins = len(low)
    x, eps, t = x.repeat(bins, 1, 1, 1), eps.repeat(bins, 1, 1, 1), t.flatten()
    return FixedNoise(noisy=perturb(x, t, eps), t=t, eps=eps, starts=starts.repeat(bins))


def _sample_losses(model: nn.Module, fixed: FixedNoise, batch_size: int) -> Tensor:
    r"""Per-entry mean of :math:`(\hat\epsilon(x_t, t) - \epsilon)^2` (N,) float64, batched,
    in eval mode without gradients."""
    device = _device(model)
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            losses = []
            for b in _batches(len(fixed), batch_size):
                noisy, t, eps = (v[b].to(device) for v in (fixed.noisy, fixed.t, fixed.eps))
                losses.append((model(noisy, t).float() - eps).square().flatten(1).mean(1))
            return torch.cat(losses).double()
    finally:
        model.train(training)


def fixed_noise_loss(model: nn.Module, fixed: FixedNoise, batch_size: int = 64) -> float:
    r"""Mean of :math:`(\hat\epsilon(x_t, t) - \epsilon)^2` on the fixed-noise set, batched."""
    return float(_sample_losses(model, fixed, batch_size).mean())


def binned_loss(model: nn.Module, binned: FixedNoise, bins: int,
                batch_size: int = 64) -> tuple[float, ...]:
    """The fixed-noise loss of each of the ``bins`` t-bins of a `binned_noise` set."""
    losses = _sample_losses(model, binned, batch_size).reshape(bins, -1).mean(1)
    return tuple(float(v) for v in losses.cpu())
