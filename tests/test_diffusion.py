"""The VP cosine process, the denoising loss and both validation losses, against hand values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from diffbench.engine.config import ModelConfig
from diffbench.engine.diffusion import (
    ETA,
    LOSS_BINS,
    FixedNoise,
    binned_loss,
    binned_noise,
    denoising_loss,
    fixed_noise_loss,
    mu,
    perturb,
    sigma,
    validation_loss,
)
from diffbench.engine.unet import build_model

TINY = ModelConfig(channels=(4, 8), blocks=1, window=3, embedding=8)


class Constant(nn.Module):
    """ε̂ = c everywhere; remembers its inputs and the mode it was called in."""

    def __init__(self, c: float):
        super().__init__()
        self.c = nn.Parameter(torch.tensor(c))
        self.calls: list[tuple[Tensor, Tensor, bool, bool]] = []

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls.append((x, t, self.training, torch.is_grad_enabled()))
        return self.c.expand_as(x)


def _trajectories(n: int = 7, length: int = 6, size: int = 4) -> Tensor:
    return torch.randn(n, length, 2, size, size, generator=torch.Generator().manual_seed(1))


def test_mu_sigma_by_hand() -> None:
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    a = math.acos(math.sqrt(1e-3))
    assert a == pytest.approx(1.5391683, abs=1e-7)  # the spec's constant
    m = [1.0, math.cos(a / 2) ** 2, 1e-3]
    s = [1e-3, math.sqrt(1 - m[1] ** 2 + 1e-6), 1.0]
    torch.testing.assert_close(mu(t), torch.tensor(m, dtype=torch.float64))
    torch.testing.assert_close(sigma(t), torch.tensor(s, dtype=torch.float64))
    assert ETA == 1e-3


def test_perturb_by_hand() -> None:
    x, eps = torch.full((2, 3, 1, 1), 2.0), torch.full((2, 3, 1, 1), -1.0)
    t = torch.tensor([0.0, 0.25])
    m = math.cos(math.acos(math.sqrt(1e-3)) * 0.25) ** 2
    expected = torch.tensor([2 - 1e-3, 2 * m - math.sqrt(1 - m**2 + 1e-6)])
    torch.testing.assert_close(perturb(x, t, eps)[:, :, 0, 0], expected[:, None].expand(2, 3))


def test_denoising_loss_by_hand() -> None:
    """With ε̂ = c the loss is mean((c − ε)²) of the very ε the generator draws."""
    model, x = Constant(0.5), torch.randn(3, 6, 4, 4)
    loss = denoising_loss(model, x, torch.Generator().manual_seed(7))
    replay = torch.Generator().manual_seed(7)
    t, eps = torch.rand(3, generator=replay), torch.randn(x.shape, generator=replay)
    torch.testing.assert_close(loss, (0.5 - eps).square().mean())
    (seen_x, seen_t, _, _), = model.calls
    torch.testing.assert_close(seen_t, t)
    torch.testing.assert_close(seen_x, perturb(x, t, eps))


def test_denoising_loss_follows_its_generator() -> None:
    model = build_model(TINY)
    x = torch.randn(2, 6, 8, 8)
    first, second = (denoising_loss(model, x, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(first, second)
    assert not torch.equal(first, denoising_loss(model, x, torch.Generator().manual_seed(4)))
    first.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_validation_loss_batched_eval_no_grad() -> None:
    """Per batch: t, then ε from the generator; sample mean; eval mode, no grad, mode restored."""
    model, windows = Constant(0.0), torch.randn(5, 6, 4, 4)
    for batch_size, sizes in ((2, [2, 2, 1]), (5, [5])):
        loss = validation_loss(model, windows, torch.Generator().manual_seed(2), batch_size)
        replay, eps = torch.Generator().manual_seed(2), []
        for size in sizes:
            torch.rand(size, generator=replay)
            eps.append(torch.randn(size, 6, 4, 4, generator=replay))
        assert loss == pytest.approx(torch.cat(eps).square().mean().item(), rel=1e-6)
    assert [len(t) for _, t, _, _ in model.calls] == [2, 2, 1, 5]
    assert all(not training and not grad for _, _, training, grad in model.calls)
    assert model.training


def test_fixed_noise_identical_across_constructions() -> None:
    data = _trajectories()
    torch.manual_seed(123)
    a = FixedNoise.draw(data, window=3)
    torch.manual_seed(456)  # the global RNG plays no part
    b = FixedNoise.draw(data.clone(), window=3)
    c = FixedNoise.draw(data, window=3, seed=1)
    for name in ("noisy", "t", "eps", "starts"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not torch.equal(a.eps, c.eps) and not torch.equal(a.t, c.t)
    assert len(a) == 7 and a.noisy.shape == a.eps.shape == (7, 6, 4, 4)


def test_fixed_noise_windows_come_from_their_trajectories() -> None:
    data = _trajectories()
    fixed = FixedNoise.draw(data, window=3)
    assert fixed.starts.min() >= 0 and fixed.starts.max() <= 6 - 3
    for n, start in enumerate(fixed.starts.tolist()):
        x = data[n, start:start + 3].flatten(0, 1)[None]  # (1, 6, 4, 4)
        torch.testing.assert_close(fixed.noisy[n:n + 1], perturb(x, fixed.t[n:n + 1],
                                                                fixed.eps[n:n + 1]))


def test_fixed_noise_loss_by_hand_and_across_model_seeds() -> None:
    data = _trajectories()
    fixed = FixedNoise.draw(data, window=3)
    model = Constant(0.25)
    loss = fixed_noise_loss(model, fixed, batch_size=3)
    assert loss == pytest.approx((0.25 - fixed.eps).square().mean().item(), rel=1e-6)
    assert [len(t) for _, t, _, _ in model.calls] == [3, 3, 1]
    assert all(not training and not grad for _, _, training, grad in model.calls)

    losses = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = build_model(TINY)
        losses.append([fixed_noise_loss(net, fixed, batch_size=b) for b in (2, 7)])
    assert losses[0][0] == pytest.approx(losses[0][1], rel=1e-5)  # deterministic, batch-free
    assert losses[0][0] != losses[1][0]
    assert fixed_noise_loss(net, FixedNoise.draw(data, 3)) == losses[1][1]  # one batch of 7


def test_binned_set_differs_between_bins_only_in_t() -> None:
    data = _trajectories()
    edges = (0.0, 0.5, 0.9, 1.0)
    binned = binned_noise(data, window=3, edges=edges, count=5)
    assert len(binned) == 15 and binned.noisy.shape == (15, 6, 4, 4)
    t = binned.t.reshape(3, 5)
    for b in range(3):
        assert ((t[b] >= edges[b]) & (t[b] <= edges[b + 1])).all()
        assert torch.equal(binned.eps[5 * b:5 * b + 5], binned.eps[:5])
    # every entry is its window noised at its own t: x recovered from bin 0 re-noises bin 2
    x = (binned.noisy[:5] - sigma(t[0])[:, None, None, None] * binned.eps[:5]) \
        / mu(t[0])[:, None, None, None]
    torch.testing.assert_close(perturb(x, t[2], binned.eps[:5]), binned.noisy[10:],
                               rtol=1e-4, atol=1e-4)
    again = binned_noise(data.clone(), window=3, edges=edges, count=5)
    assert torch.equal(again.noisy, binned.noisy)  # a fixed set: the same in every run
    assert binned_noise(data, 3).t.reshape(len(LOSS_BINS) - 1, -1).shape[1] == 16


def test_binned_loss_by_hand() -> None:
    """ε̂ = c scores mean((c − ε)²) in every bin (the same ε); a model that is exact on the
    perturbed input where t is high (ε̂ = x_t / σ when μ → 0) scores lowest there."""
    binned = binned_noise(_trajectories(), window=3, edges=(0.0, 0.5, 1.0), count=4)
    losses = binned_loss(Constant(0.25), binned, bins=2, batch_size=3)
    expected = (0.25 - binned.eps[:4]).square().mean().item()
    assert losses == pytest.approx((expected, expected), rel=1e-6)

    class Shrink(Constant):
        def forward(self, x: Tensor, t: Tensor) -> Tensor:
            return x / sigma(t)[:, None, None, None]

    low, high = binned_loss(Shrink(0.0), binned, bins=2)
    assert high < low
    assert fixed_noise_loss(Shrink(0.0), binned) == pytest.approx((low + high) / 2, rel=1e-6)


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="trajectories"):
        FixedNoise.draw(torch.zeros(3, 6, 4, 4), window=3)
    with pytest.raises(ValueError, match="window"):
        FixedNoise.draw(_trajectories(), window=7)
    with pytest.raises(ValueError, match="batch"):
        fixed_noise_loss(Constant(0.0), FixedNoise.draw(_trajectories(), 3), batch_size=0)
    with pytest.raises(ValueError, match="edges"):
        binned_noise(_trajectories(), 3, edges=(0.0, 0.5, 0.5, 1.0))
