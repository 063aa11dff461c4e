r"""The U-Net's two hand-differentiated layers: circular padding and channel norm.

Both are cheap element moves or reductions whose autograd graphs cost far more than their
maths. torch's circular padding (``Conv2d(padding_mode="circular")``) is a chain of slice
copies; its backward is ≈ 34 kernels per convolution and it hands back NCHW whatever the
input's layout. Here one padding is two concatenations forward and, backward, the halo folded
back onto the edges (six kernels), in the layout it was given (``channels_last`` stays so).

The fold adds the halo in the order torch's autograd does (rows, then columns, each the
far side first), so outputs and gradients are bit-identical to ``padding_mode="circular"``
in fp32: a corner's four contributions sum as :math:`(a + b) + (c + d)` in both.

ChannelNorm's backward is the closed form of the standardisation's Jacobian,

.. math:: \frac{\partial \ell}{\partial x} = \frac{1}{s}\Big(g - \bar g
    - y\,\frac{\sum_c g_c y_c}{C - 1}\Big), \qquad y = \frac{x - \bar x}{s},

three reductions and a few products instead of autograd's ≈ 17 kernels; its forward is the
same expression as before, so outputs are unchanged (gradients move in the last bits).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class CircularPad(torch.autograd.Function):
    """Pad the last two dimensions by one pixel each side, periodically."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        x = torch.cat((x[..., -1:, :], x, x[..., :1, :]), dim=-2)  # (…, H + 2, W)
        return torch.cat((x[..., -1:], x, x[..., :1]), dim=-1)  # (…, H + 2, W + 2)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        rows = grad[..., 1:-1, :].clone()  # (…, H, W + 2)
        rows[..., 0, :] += grad[..., -1, :]
        rows[..., -1, :] += grad[..., 0, :]
        folded = rows[..., 1:-1].clone()  # (…, H, W)
        folded[..., 0] += rows[..., -1]
        folded[..., -1] += rows[..., 0]
        return folded


def circular_pad(x: Tensor) -> Tensor:
    """``x`` (…, H, W) → (…, H + 2, W + 2), wrapped around both spatial dimensions."""
    return CircularPad.apply(x)


class CircularConv2d(nn.Conv2d):
    """3×3 convolution with circular padding through `circular_pad`.

    The same module as ``nn.Conv2d(…, padding=1, padding_mode="circular")``: same parameters,
    state-dict keys and settings, so checkpoints of either load into the other.
    """

    def __init__(self, inputs: int, outputs: int, stride: int = 1) -> None:
        super().__init__(inputs, outputs, 3, stride=stride, padding=1, padding_mode="circular")

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        return F.conv2d(circular_pad(x), weight, bias, self.stride, 0, self.dilation,
                        self.groups)


class ChannelNormFunction(torch.autograd.Function):
    """Standardise over dimension −3 (channels) with the unbiased variance."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, eps: float) -> Tensor:
        variance, mean = torch.var_mean(x, dim=-3, keepdim=True)  # (…, 1, H, W)
        scale = (variance + eps).sqrt()
        y = (x - mean) / scale
        ctx.save_for_backward(y, scale)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        y, scale = ctx.saved_tensors
        channels = y.shape[-3]
        projection = (grad * y).sum(dim=-3, keepdim=True) / (channels - 1)
        return (grad - grad.mean(dim=-3, keepdim=True) - y * projection) / scale, None
