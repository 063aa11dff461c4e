"""The score U-Net: exact size, shapes, gradients, circular equivariance, hand-computed parts."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from diffbench.engine.config import ModelConfig, load_preset
from diffbench.engine.unet import ChannelNorm, ScoreUNet, TimeEmbedding, build_model, forcing

TINY = ModelConfig(channels=(4, 8, 8), blocks=1, window=3, embedding=8)


@pytest.fixture
def tiny() -> ScoreUNet:
    torch.manual_seed(0)
    return build_model(TINY)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_paper_parameter_count() -> None:
    model = build_model(load_preset("paper").model)
    assert _count(model) == 22_874_922
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}


def test_parameter_count_by_formula() -> None:
    """Per block 65·C + 2·(9C² + C) at embedding 64: blocks, heads, tails and MLP add up."""
    channels, blocks, window = (96, 192, 384), 3, 5
    model = build_model(ModelConfig(channels=channels, blocks=blocks, window=window, embedding=64))
    block = sum(2 * blocks * (65 * c + 2 * (9 * c * c + c)) for c in channels)
    widths = (2 * window + 1, *channels)
    heads = sum(9 * a * b + b for a, b in pairwise(widths))
    tails = sum(9 * a * b + b for a, b in zip(channels[1:], channels[:-1], strict=True))
    tails += 9 * channels[0] * 2 * window + 2 * window
    mlp = 32 * 256 + 256 + 256 * 64 + 64
    assert _count(model) == block + heads + tails + mlp == 22_874_922


def test_time_embedding_holds_exactly_the_mlp(tiny: ScoreUNet) -> None:
    names = [name for name, _ in tiny.time_embedding.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert tiny.time_embedding[0].weight.shape == (32, 32)  # 32 → 4·8
    assert tiny.time_embedding[2].weight.shape == (8, 32)  # 4·8 → 8


@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("batch", [1, 3])
def test_shapes_of_presets(preset: str, batch: int) -> None:
    model = build_model(load_preset(preset).model)
    x = torch.randn(batch, 10, 16, 8)
    with torch.no_grad():
        y = model(x, torch.rand(batch))
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("shape", [(8, 8), (16, 24), (32, 8)])
def test_shapes_any_divisible_grid(tiny: ScoreUNet, shape: tuple[int, int]) -> None:
    x = torch.randn(5, 6, *shape)
    assert tiny(x, torch.rand(5)).shape == x.shape


def test_paper_forward_batch_of_one() -> None:
    model = build_model(load_preset("paper").model)
    with torch.no_grad():
        y = model(torch.randn(1, 10, 64, 64), torch.rand(1))
    assert y.shape == (1, 10, 64, 64)


def test_every_parameter_gets_a_gradient(tiny: ScoreUNet) -> None:
    tiny(torch.randn(2, 6, 8, 8), torch.rand(2)).square().mean().backward()
    for name, p in tiny.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_circular_shift_along_x_is_equivariant(tiny: ScoreUNet) -> None:
    x, t = torch.randn(2, 6, 16, 16), torch.rand(2)
    with torch.no_grad():
        y = tiny(x, t)
        shifted = tiny(x.roll(4, dims=-2), t)
        odd = tiny(x.roll(1, dims=-2), t)
    torch.testing.assert_close(shifted, y.roll(4, dims=-2), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(odd, y.roll(1, dims=-2), atol=1e-3)  # stride 2 breaks odd shifts


def test_forcing_breaks_y_equivariance_except_by_its_period(tiny: ScoreUNet) -> None:
    """At W = 32 the forcing sin(4y) has period 8: a y-shift by 8 commutes, by 4 does not."""
    x, t = torch.randn(2, 6, 16, 32), torch.rand(2)
    with torch.no_grad():
        y = tiny(x, t)
        period = tiny(x.roll(8, dims=-1), t)
        half = tiny(x.roll(4, dims=-1), t)
    torch.testing.assert_close(period, y.roll(8, dims=-1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(half, y.roll(4, dims=-1), atol=1e-3)


def test_forcing_channel_values_and_cache(tiny: ScoreUNet) -> None:
    expected = [math.sin(4 * (j + 0.5) * 2 * math.pi / 64) for j in range(64)]
    torch.testing.assert_close(forcing(64), torch.tensor(expected))
    tiny(torch.randn(1, 6, 8, 64), torch.rand(1))
    torch.testing.assert_close(tiny.forcing, torch.tensor(expected))
    tiny(torch.randn(1, 6, 8, 16), torch.rand(1))
    assert tiny.forcing.shape == (16,)
    assert "forcing" not in tiny.state_dict()


def test_forcing_enters_the_network(tiny: ScoreUNet) -> None:
    """The head sees 2L + 1 channels; the last one is the forcing, along y."""
    seen = []
    tiny.heads[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    tiny(torch.randn(2, 6, 8, 16), torch.rand(2))
    (head_input,) = seen
    assert head_input.shape == (2, 7, 8, 16)
    torch.testing.assert_close(head_input[:, 6], forcing(16).expand(2, 8, 16))


def test_channel_norm_by_hand() -> None:
    x = torch.tensor([1.0, 2.0, 4.0]).reshape(1, 3, 1, 1)
    mean, variance = 7 / 3, ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2
    expected = [(v - mean) / math.sqrt(variance + 1e-5) for v in (1.0, 2.0, 4.0)]
    torch.testing.assert_close(ChannelNorm()(x).flatten(), torch.tensor(expected))
    assert list(ChannelNorm().parameters()) == []


def test_time_embedding_features_by_hand() -> None:
    t = torch.tensor([0.0, 0.3])
    features = TimeEmbedding(8).fourier(t)
    assert features.shape == (2, 32)
    expected = [[math.cos(math.pi * n * s) for n in range(1, 17)]
                + [math.sin(math.pi * n * s) for n in range(1, 17)] for s in (0.0, 0.3)]
    torch.testing.assert_close(features, torch.tensor(expected))


def test_time_changes_the_output(tiny: ScoreUNet) -> None:
    x = torch.randn(1, 6, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(tiny(x, torch.tensor([0.1])), tiny(x, torch.tensor([0.9])))


def test_state_dict_round_trip(tiny: ScoreUNet) -> None:
    other = build_model(TINY)
    other.load_state_dict(tiny.state_dict())
    x, t = torch.randn(2, 6, 8, 8), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(other(x, t), tiny(x, t), rtol=0, atol=0)
