r"""Muon as the paper runs it (spec §5), with an inner AdamW for what Muon must not touch.

Pure tensor functions carry the maths; the `Muon` class only keeps state.

- `zeropower_via_newtonschulz5(G)`: five quintic Newton–Schulz iterations
  $X \leftarrow aX + (bA + cA^2)X$, $A = XX^\top$, $(a, b, c) = (3.4445, -4.7750, 2.0315)$,
  from $X_0 = G / \|G\|_F$ (transposed when rows > cols), approximating $UV^\top$ of
  $G = USV^\top$: singular values land in roughly $[0.7, 1.2]$ rather than exactly 1.
- `muon_update(grads, momenta)`: Nesterov momentum $\beta = 0.95$ as an exponential average
  $m \leftarrow \beta m + (1 - \beta) g$, $u = (1 - \beta) g + \beta m$ (the classic
  $m \leftarrow \beta m + g$, $u = g + \beta m$ scaled by $1 - \beta$, which the normalisation
  removes); conv weights $(C_{out}, C_{in}, k_h, k_w)$ flattened to $(C_{out}, C_{in} k_h k_w)$,
  orthogonalised, scaled by $0.2\sqrt{\max(\text{rows}, \text{cols})}$ (so the lr is on AdamW's
  scale) and reshaped back. Matrices of one shape are orthogonalised as one batch.
- `adam_update(grads, exp_avgs, exp_avg_sqs, step)`: bias-corrected Adam direction for the
  1-D parameters and the time-embedding MLP (betas (0.95, 0.95), eps 1e-8).

Both kinds of group use decoupled weight decay $p \leftarrow p (1 - \eta\lambda)$, then
$p \leftarrow p - \eta u$, with the same $\eta$ and $\lambda$.

Newton–Schulz runs in bfloat16 on CUDA (tensor cores) and in float32 elsewhere: on a CPU
without bf16 hardware bf16 matmuls are an order of magnitude slower than fp32.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
SCALE = 0.2  # update RMS ≈ 0.2 · √max(rows, cols) · RMS of an orthogonal matrix ≈ AdamW's


def zeropower_via_newtonschulz5(G: Tensor, steps: int = NS_STEPS,
                                dtype: torch.dtype = torch.float32) -> Tensor:
    """≈ U Vᵀ of a matrix G = U S Vᵀ (..., rows, cols), computed in `dtype`, returned in `dtype`."""
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT  # (…, small, large): A = X Xᵀ is the small Gram matrix
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm ≤ Frobenius norm ≤ 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if transposed else X


def muon_update(grads: list[Tensor], momenta: list[Tensor], beta: float = 0.95,
                nesterov: bool = True, steps: int = NS_STEPS,
                dtype: torch.dtype = torch.float32) -> list[Tensor]:
    """Muon's directions for weights of 2 or more dims; updates `momenta` in place.

    Weights whose flattened matrices share a shape are orthogonalised as one batch: the
    U-Net repeats a few shapes, so a handful of batched iterations replace one per weight.
    """
    torch._foreach_lerp_(momenta, grads, 1 - beta)
    updates = torch._foreach_lerp(grads, momenta, beta) if nesterov else momenta
    matrices = [u.reshape(u.size(0), -1) for u in updates]  # (C_out, C_in · k_h · k_w)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, matrix in enumerate(matrices):
        by_shape.setdefault(tuple(matrix.shape), []).append(i)
    directions = list(grads)  # each replaced below
    for (rows, cols), members in by_shape.items():
        ortho = zeropower_via_newtonschulz5(torch.stack([matrices[i] for i in members]), steps,
                                            dtype)  # (n, rows, cols)
        ortho = ortho * (SCALE * math.sqrt(max(rows, cols)))
        for i, o in zip(members, ortho, strict=True):
            directions[i] = o.view_as(grads[i]).to(grads[i].dtype)
    return directions


def adam_update(grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                step: int, betas: tuple[float, float] = (0.95, 0.95),
                eps: float = 1e-8) -> list[Tensor]:
    """Bias-corrected Adam directions m̂ / (√v̂ + eps) at `step` (from 1); updates the moments."""
    beta1, beta2 = betas
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - beta2)
    denominators = torch._foreach_div(exp_avg_sqs, 1 - beta2**step)
    torch._foreach_sqrt_(denominators)
    torch._foreach_add_(denominators, eps)
    directions = torch._foreach_div(exp_avgs, 1 - beta1**step)
    torch._foreach_div_(directions, denominators)
    return directions


class Muon(torch.optim.Optimizer):
    """One optimizer, two kinds of group: `use_muon=True` (Muon) and `use_muon=False` (AdamW).

    `param_groups` are dicts with `params` and `use_muon`; every other setting comes from the
    keyword arguments. The trainer sees one `step()` and one `state_dict()`.
    `ns_dtype=None` picks bfloat16 for CUDA parameters and float32 otherwise.
    """

    def __init__(self, param_groups: Iterable[dict[str, Any]], lr: float, weight_decay: float,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = NS_STEPS,
                 adam_betas: tuple[float, float] = (0.95, 0.95), eps: float = 1e-8,
                 ns_dtype: torch.dtype | None = None) -> None:
        groups = list(param_groups)
        for group in groups:
            if not isinstance(group.get("use_muon"), bool):
                raise ValueError("every Muon parameter group needs use_muon=True or False")
            if group["use_muon"]:
                for p in group["params"]:
                    if p.ndim < 2:
                        raise ValueError(f"Muon needs weights of 2 or more dims, got {p.ndim}-D")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_steps=ns_steps, betas=tuple(adam_betas), eps=eps)
        super().__init__(groups, defaults)
        self.ns_dtype = ns_dtype

    def newton_schulz_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype Newton–Schulz runs in for parameters on `device`."""
        if self.ns_dtype is not None:
            return self.ns_dtype
        return torch.bfloat16 if device.type == "cuda" else torch.float32

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            if group["use_muon"]:
                for p, state in zip(params, states, strict=True):
                    if not state:
                        state["momentum_buffer"] = torch.zeros_like(p)
                updates = muon_update(grads, [s["momentum_buffer"] for s in states],
                                      group["momentum"], group["nesterov"], group["ns_steps"],
                                      self.newton_schulz_dtype(params[0].device))
            else:
                for p, state in zip(params, states, strict=True):
                    if not state:
                        state.update(step=0, exp_avg=torch.zeros_like(p),
                                     exp_avg_sq=torch.zeros_like(p))
                    state["step"] += 1
                steps = {s["step"] for s in states}
                if len(steps) != 1:
                    raise RuntimeError("Muon's AdamW parameters have stepped unequally: "
                                       "every one of them needs a gradient at every step")
                updates = adam_update(grads, [s["exp_avg"] for s in states],
                                      [s["exp_avg_sq"] for s in states], steps.pop(),
                                      group["betas"], group["eps"])
            torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            torch._foreach_add_(params, updates, alpha=-group["lr"])
        return loss
