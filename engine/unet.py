r"""The score U-Net of SDA for Kolmogorov flow (spec §2): :math:`\hat\epsilon(x_t, t)`.

A window of :math:`L` states is :math:`2L` channels, u and v time-major; the network sees them
plus one fixed forcing channel :math:`\sin(4 y_j)` and predicts the noise of all :math:`2L`.

.. math::
    y_j = \frac{2\pi}{W} \left(j + \tfrac{1}{2}\right), \qquad
    e(t) = \mathrm{MLP}\big([\cos(\pi n t)]_{n=1}^{16} \,\|\, [\sin(\pi n t)]_{n=1}^{16}\big)

Every residual block adds a projection of :math:`e(t)` before its residue,

.. math:: x \leftarrow x + R\big(x + A\, e(t) + b\big), \qquad
    R = \mathrm{Conv} \circ \mathrm{SiLU} \circ \mathrm{Conv} \circ \mathrm{ChannelNorm},

and every convolution is 3×3 with bias and circular padding, so the network is equivariant to
periodic shifts along x by multiples of :math:`2^{\text{levels} - 1}` pixels.

References:
    | Score-based Data Assimilation (Rozet & Louppe, 2023), https://arxiv.org/abs/2306.10574
    | U-Net: Convolutional Networks for Biomedical Image Segmentation (Ronneberger et al., 2015)
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor, nn

from diffbench.engine.config import ModelConfig
from diffbench.engine.layers import ChannelNormFunction, CircularConv2d

FREQUENCIES = 16  # cos and sin features of t, 2 · 16 = 32 inputs of the time MLP
FORCING_WAVENUMBER = 4  # the forcing channel sin(4y) of Kolmogorov flow (spec §1)


def conv(inputs: int, outputs: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with bias and circular padding (engine/layers.py: hand-differentiated,
    bit-identical to ``padding_mode="circular"``)."""
    return CircularConv2d(inputs, outputs, stride)


class ChannelNorm(nn.Module):
    r"""Parameter-free standardisation over channels at each pixel.

    .. math:: \mathrm{ChannelNorm}(x)_{c} = \frac{x_c - \bar x}{\sqrt{s^2 + \epsilon}},
        \qquad s^2 = \frac{1}{C - 1} \sum_c (x_c - \bar x)^2, \quad \epsilon = 10^{-5}
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return ChannelNormFunction.apply(x, self.eps)  # closed-form backward


class TimeEmbedding(nn.Sequential):
    r"""Diffusion time :math:`t \in [0, 1]` to features: Fourier features, then an MLP.

    .. math:: e(t) = W_2\, \mathrm{SiLU}\big(W_1 [\cos(\pi n t) \| \sin(\pi n t)]_{n=1}^{16}
        + b_1\big) + b_2

    with hidden width :math:`4 \times` ``features`` (paper: 32 → 256 → 64). Its parameters are
    exactly the MLP's (the frequencies are a non-persistent buffer).
    """

    def __init__(self, features: int):
        super().__init__(
            nn.Linear(2 * FREQUENCIES, 4 * features),
            nn.SiLU(),
            nn.Linear(4 * features, features),
        )
        frequencies = math.pi * torch.arange(1, FREQUENCIES + 1, dtype=torch.float32)
        self.register_buffer("frequencies", frequencies, persistent=False)

    def fourier(self, t: Tensor) -> Tensor:
        """``(B,)`` → ``(B, 32)``: cosines then sines of π n t, n = 1 … 16."""
        angles = t[:, None] * self.frequencies  # (B, 16)
        return torch.cat((angles.cos(), angles.sin()), dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        return super().forward(self.fourier(t))  # (B, features)


class ResidualBlock(nn.Module):
    r"""Residual block modulated by the time embedding: :math:`x + R(x + \mathrm{Linear}(e))`."""

    def __init__(self, channels: int, embedding: int):
        super().__init__()
        self.project = nn.Linear(embedding, channels)
        self.residue = nn.Sequential(
            ChannelNorm(),
            conv(channels, channels),
            nn.SiLU(),
            conv(channels, channels),
        )

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        # x: (B, C, H, W), e: (B, E)
        return x + self.residue(x + self.project(e)[:, :, None, None])


def forcing(width: int) -> Tensor:
    r"""The forcing row :math:`\sin(4 y_j)`, :math:`y_j = 2\pi (j + \frac12) / W`, shape (W,)."""
    y = 2 * math.pi / width * (torch.arange(width, dtype=torch.float64) + 0.5)
    return torch.sin(FORCING_WAVENUMBER * y).float()


class ScoreUNet(nn.Module):
    r"""The noise estimator :math:`\hat\epsilon(x_t, t)` on windows of ``window`` states.

    Levels :math:`i = 0 … n-1` have ``channels[i]`` channels at resolution :math:`H / 2^i`.
    Down: a head (Conv(2L+1 → c₀), then stride-2 Conv(c_{i−1} → c_i)) and ``blocks`` blocks
    per level, whose output is kept as the level's skip. Up, from the deepest level: ``blocks``
    blocks, then a tail, ChannelNorm → nearest ×2 → Conv(c_i → c_{i−1}), added to the skip of
    level i − 1; the last tail is Conv(c₀ → 2L).

    Arguments:
        channels: Channels per level (paper: 96, 192, 384).
        blocks: Residual blocks per level on the way down, and as many on the way up.
        window: States per window :math:`L`; inputs and outputs have :math:`2L` channels.
        embedding: Width of the time embedding (paper: 64).
    """

    def __init__(self, channels: tuple[int, ...], blocks: int, window: int, embedding: int):
        super().__init__()
        self.window = window
        self.time_embedding = TimeEmbedding(embedding)

        widths = (2 * window + 1, *channels)
        self.heads = nn.ModuleList(
            conv(before, after, stride=1 if i == 0 else 2)
            for i, (before, after) in enumerate(pairwise(widths))
        )
        self.descent = nn.ModuleList(self._level(c, blocks, embedding) for c in channels)
        self.ascent = nn.ModuleList(self._level(c, blocks, embedding) for c in reversed(channels))
        self.tails = nn.ModuleList([
            *(nn.Sequential(ChannelNorm(), nn.Upsample(scale_factor=2, mode="nearest"),
                            conv(c, below)) for c, below in pairwise(reversed(channels))),
            conv(channels[0], 2 * window),
        ])
        self.register_buffer("forcing", torch.zeros(0), persistent=False)

    @staticmethod
    def _level(channels: int, blocks: int, embedding: int) -> nn.ModuleList:
        return nn.ModuleList(ResidualBlock(channels, embedding) for _ in range(blocks))

    def _forcing(self, x: Tensor) -> Tensor:
        """The forcing channel for ``x`` (B, 2L, H, W) → (B, 1, H, W), cached per width."""
        b, _, h, w = x.shape
        if self.forcing.shape != (w,):
            self.forcing = forcing(w).to(self.forcing.device)
        return self.forcing.to(x.dtype).expand(b, 1, h, w)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """``x`` (B, 2L, H, W) and ``t`` (B,) in [0, 1] → ε̂ (B, 2L, H, W)."""
        e = self.time_embedding(t)  # (B, E)
        x = torch.cat((x, self._forcing(x)), dim=1)  # (B, 2L + 1, H, W)

        skips = []
        for head, blocks in zip(self.heads, self.descent, strict=True):
            x = head(x)  # (B, c_i, H / 2^i, W / 2^i)
            for block in blocks:
                x = block(x, e)
            skips.append(x)
        skips.pop()  # the deepest level goes straight on up

        for blocks, tail in zip(self.ascent, self.tails, strict=True):
            for block in blocks:
                x = block(x, e)
            x = tail(x) + skips.pop() if skips else tail(x)

        return x  # (B, 2L, H, W)


def build_model(config: ModelConfig) -> ScoreUNet:
    r"""The score U-Net of a preset's model section (paper: 22,874,922 parameters).

    It accepts any H, W divisible by :math:`2^{\text{levels} - 1}`.
    """
    return ScoreUNet(tuple(config.channels), config.blocks, config.window, config.embedding)
