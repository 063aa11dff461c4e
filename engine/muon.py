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
- `adam_update(grads, exp_avgs, exp_avg_sqs, corrections)`: bias-corrected Adam direction for
  the 1-D parameters and the time-embedding MLP (betas (0.95, 0.95), eps 1e-8).

Both kinds of group use decoupled weight decay $p \leftarrow p (1 - \eta\lambda)$, then
$p \leftarrow p - \eta u$, with the same $\eta$ and $\lambda$.

Newton–Schulz runs in bfloat16 on CUDA (tensor cores) and in float32 elsewhere: on a CPU
without bf16 hardware bf16 matmuls are an order of magnitude slower than fp32. On CUDA the
whole update (every group) is replayed as one CUDA graph (`diffbench.engine.step_graph`): its
few hundred kernels would otherwise each cost a launch, which is what a bf16 step waits for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .step_graph import StepGraph

Scalar = float | Tensor  # a number, or a 0-d device tensor inside a CUDA graph

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
SCALE = 0.2  # update RMS ≈ 0.2 · √max(rows, cols) · RMS of an orthogonal matrix ≈ AdamW's


def zeropower_via_newtonschulz5(G: Tensor, steps: int = NS_STEPS,
                                dtype: torch.dtype = torch.float32) -> Tensor:
    """≈ U Vᵀ of a matrix G = U S Vᵀ (..., rows, cols), computed in `dtype`, returned in `dtype`.

    Each iteration is three batched products, the sums fused into them (`baddbmm`).
    """
    a, b, c = NS_COEFFICIENTS
    X = G.to(dtype).reshape(-1, *G.shape[-2:])  # (n, rows, cols)
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT  # (…, small, large): A = X Xᵀ is the small Gram matrix
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm ≤ Frobenius norm ≤ 1
    for _ in range(steps):
        A = X @ X.mT
        B = torch.baddbmm(A, A, A, beta=b, alpha=c)  # bA + cA²
        X = torch.baddbmm(X, B, X, beta=a)  # aX + BX
    return (X.mT if transposed else X).reshape(G.shape)


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
        ortho = (ortho * (SCALE * math.sqrt(max(rows, cols)))).to(grads[members[0]].dtype)
        for i, o in zip(members, ortho, strict=True):  # views: one cast per shape, not weight
            directions[i] = o.view_as(grads[i])
    return directions


def adam_update(grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                corrections: tuple[Scalar, Scalar], betas: tuple[float, float] = (0.95, 0.95),
                eps: float = 1e-8) -> list[Tensor]:
    """Bias-corrected Adam directions m̂ / (√v̂ + eps); updates the moments in place.

    `corrections` are (1 − β₁ᵗ, 1 − β₂ᵗ) at the step t (from 1), numbers or 0-d tensors.
    """
    beta1, beta2 = betas
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - beta2)
    denominators = torch._foreach_div(exp_avg_sqs, corrections[1])
    torch._foreach_sqrt_(denominators)
    torch._foreach_add_(denominators, eps)
    directions = torch._foreach_div(exp_avgs, corrections[0])
    torch._foreach_div_(directions, denominators)
    return directions


def descend(params: list[Tensor], directions: list[Tensor], lr: Scalar, decay: Scalar) -> None:
    """p ← p · decay − lr · direction (decay = 1 − lr·λ), in place; numbers or 0-d tensors."""
    torch._foreach_mul_(params, decay)
    if isinstance(lr, Tensor):
        torch._foreach_sub_(params, torch._foreach_mul(directions, lr))
    else:
        torch._foreach_add_(params, directions, alpha=-lr)


class Muon(torch.optim.Optimizer):
    """One optimizer, two kinds of group: `use_muon=True` (Muon) and `use_muon=False` (AdamW).

    `param_groups` are dicts with `params` and `use_muon`; every other setting comes from the
    keyword arguments. The trainer sees one `step()` and one `state_dict()`.
    `ns_dtype=None` picks bfloat16 for CUDA parameters and float32 otherwise. `cuda_graph=None`
    replays the update of CUDA parameters as one CUDA graph (`diffbench.engine.step_graph`;
    the same arithmetic, the lr and bias corrections as device scalars); True also on the CPU,
    where it runs that path eagerly.
    """

    def __init__(self, param_groups: Iterable[dict[str, Any]], lr: float, weight_decay: float,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = NS_STEPS,
                 adam_betas: tuple[float, float] = (0.95, 0.95), eps: float = 1e-8,
                 ns_dtype: torch.dtype | None = None, cuda_graph: bool | None = None) -> None:
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
        self.cuda_graph = cuda_graph
        self._graph: StepGraph | None = None

    def newton_schulz_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype Newton–Schulz runs in for parameters on `device`."""
        if self.ns_dtype is not None:
            return self.ns_dtype
        return torch.bfloat16 if device.type == "cuda" else torch.float32

    def graphed(self, device: torch.device) -> bool:
        """Whether the update of parameters on `device` runs through `StepGraph`."""
        return self.cuda_graph if self.cuda_graph is not None else device.type == "cuda"

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work, scalars = [], []  # (group, params, states) with gradients; the step's numbers
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p, group["use_muon"]) for p in params]
            scalars += [group["lr"], 1 - group["lr"] * group["weight_decay"]]
            if not group["use_muon"]:
                steps = {s["step"] for s in states}
                if len(steps) != 1:
                    raise RuntimeError("Muon's AdamW parameters have stepped unequally: "
                                       "every one of them needs a gradient at every step")
                beta1, beta2 = group["betas"]
                t = steps.pop()
                scalars += [1 - beta1**t, 1 - beta2**t]
            work.append((group, params, states))
        if not work:
            return loss
        grads = [p.grad for _, params, _ in work for p in params]
        device = grads[0].device

        def update(grads: list[Tensor], scalars: list[Scalar]) -> None:
            grads_in, scalars_in = iter(grads), iter(scalars)
            for group, params, states in work:
                mine = [next(grads_in) for _ in params]
                lr, decay = next(scalars_in), next(scalars_in)
                if group["use_muon"]:
                    directions = muon_update(
                        mine, [s["momentum_buffer"] for s in states], group["momentum"],
                        group["nesterov"], group["ns_steps"], self.newton_schulz_dtype(device))
                else:
                    corrections = next(scalars_in), next(scalars_in)
                    directions = adam_update(mine, [s["exp_avg"] for s in states],
                                             [s["exp_avg_sq"] for s in states], corrections,
                                             group["betas"], group["eps"])
                descend(params, directions, lr, decay)

        if not self.graphed(device):
            update(grads, scalars)
            return loss
        if self._graph is None:
            self._graph = StepGraph(capture=device.type == "cuda")
        key = [self.state] + [p for _, params, _ in work for p in params]
        constants = [(g["use_muon"], g["momentum"], g["nesterov"], g["ns_steps"],
                      tuple(g["betas"]), g["eps"]) for g, _, _ in work]
        self._graph.step(key, constants, lambda stacks, scalars: update(
            [s[0] for s in stacks], scalars), [[g] for g in grads], scalars)
        return loss

    def _state(self, p: Tensor, use_muon: bool) -> dict[str, Any]:
        """`state[p]`, created at the first gradient; the AdamW step counted here."""
        state = self.state[p]
        if use_muon:
            if not state:
                state["momentum_buffer"] = torch.zeros_like(p)
        else:
            if not state:
                state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
            state["step"] += 1
        return state
