"""The hand-differentiated layers against torch's own: bit for bit where claimed, else close."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from diffbench.engine.config import ModelConfig
from diffbench.engine.layers import ChannelNormFunction, CircularConv2d, circular_pad
from diffbench.engine.unet import ChannelNorm, build_model


def _reference_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose convolutions pad with torch's ``padding_mode="circular"``."""
    reference = copy.deepcopy(model)
    for module in reference.modules():
        for name, child in module.named_children():
            if isinstance(child, CircularConv2d):
                plain = nn.Conv2d(child.in_channels, child.out_channels, 3, stride=child.stride,
                                  padding=1, padding_mode="circular")
                plain.load_state_dict(child.state_dict())
                setattr(module, name, plain)
    return reference


@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 4, 1, 3), (2, 2, 8, 8)])
def test_padding_and_its_gradient_are_torch_circular_bit_for_bit(shape) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=generator, requires_grad=True)
    mine, theirs = circular_pad(x), F.pad(x, (1, 1, 1, 1), mode="circular")
    assert torch.equal(mine, theirs)
    grad = torch.randn(mine.shape, generator=generator)
    (a,) = torch.autograd.grad(mine, x, grad)
    (b,) = torch.autograd.grad(theirs, x, grad)
    assert torch.equal(a, b)


def test_padding_keeps_channels_last() -> None:
    x = torch.randn(2, 6, 8, 8).contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    y = circular_pad(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    (grad,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert grad.is_contiguous(memory_format=torch.channels_last)


def test_halo_gradient_counts_each_pixel_once_per_copy() -> None:
    """Each input pixel appears 1× inside, an edge pixel once more per side it wraps to, a
    corner pixel in all four corners too: its gradient of sum() is 1, 2 or 4."""
    x = torch.ones(1, 1, 4, 5, requires_grad=True)
    circular_pad(x).sum().backward()
    expected = torch.ones(4, 5)
    expected[[0, -1], :] += 1
    expected[:, [0, -1]] += 1
    expected[[0, 0, -1, -1], [0, -1, 0, -1]] = 4
    assert torch.equal(x.grad[0, 0], expected)


def test_model_is_the_torch_circular_model_bit_for_bit_in_fp32() -> None:
    """Outputs and every parameter gradient equal those of the same weights padded by torch."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(channels=(8, 16, 16), blocks=2, window=3, embedding=16))
    reference = _reference_model(model)
    assert model.state_dict().keys() == reference.state_dict().keys()
    settings = [[m.extra_repr() for m in tree.modules()] for tree in (model, reference)]
    assert settings[0] == settings[1]
    generator = torch.Generator().manual_seed(1)
    x, t = torch.randn(3, 6, 16, 16, generator=generator), torch.rand(3, generator=generator)
    outputs = [m(x, t) for m in (model, reference)]
    assert torch.equal(*outputs)
    for y in outputs:
        y.square().mean().backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def test_checkpoints_of_the_torch_circular_model_load() -> None:
    torch.manual_seed(0)
    config = ModelConfig(channels=(4, 8), blocks=1, window=3, embedding=8)
    old = _reference_model(build_model(config))
    new = build_model(config)
    new.load_state_dict(old.state_dict())
    x, t = torch.randn(2, 6, 8, 8), torch.rand(2)
    assert torch.equal(new(x, t), old(x, t))


def test_channel_norm_forward_is_the_formula_and_its_gradient_checks() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 4, generator=generator, dtype=torch.float64)
    variance, mean = torch.var_mean(x, dim=-3, keepdim=True)
    assert torch.equal(ChannelNorm()(x), (x - mean) / (variance + 1e-5).sqrt())
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: ChannelNormFunction.apply(v, 1e-5), (x,))


def test_channel_norm_gradient_matches_autograd_in_fp32() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, 16, 8, 8, generator=generator, requires_grad=True)
    grad = torch.randn(x.shape, generator=generator)
    (mine,) = torch.autograd.grad(ChannelNorm()(x), x, grad)
    variance, mean = torch.var_mean(x, dim=-3, keepdim=True)
    (theirs,) = torch.autograd.grad((x - mean) / (variance + 1e-5).sqrt(), x, grad)
    torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
