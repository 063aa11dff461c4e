r"""SOAP (Vyas et al. 2024, "SOAP: Improving and Stabilizing Shampoo using Adam"), batched.

Adam run in the eigenbasis of Shampoo's Kronecker factors. For a weight $W$ of $d$ dims with
gradient $G$, per dim $k$ of size $s_k \le$ `max_precondition_dim` (1-D weights: none):

- factor  $L_k \leftarrow \beta_s L_k + (1 - \beta_s)\, G_{(k)} G_{(k)}^\top$, $G_{(k)}$ the
  mode-$k$ unfolding $(s_k, \prod_{j \ne k} s_j)$; $\beta_s = \beta_2$;
- basis   $Q_k$: eigenvectors of $L_k$ at the first call, then every `precondition_frequency`
  updates one power step and a QR, the second moment permuted to match (`engine/eigenbasis.py`);
- rotation $\tilde X = X \times_1 Q_1^\top \cdots \times_d Q_d^\top$ (`project`) and back
  $X = \tilde X \times_1 Q_1 \cdots \times_d Q_d$ (`project(…, back=True)`).

Update $t = 1, 2, \dots$ (the first call only sets up $L_k$ and $Q_k$ and moves nothing):

$m \leftarrow \beta_1 m + (1 - \beta_1) G$ (original space),
$v \leftarrow \beta_2 v + (1 - \beta_2) \tilde G^2$ (rotated space),
$W \leftarrow W - \eta \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}\,
\mathrm{back}\big(\tilde m / (\sqrt v + \epsilon)\big)$, then $W \leftarrow W (1 - \eta\lambda)$,
then the factors take $G$ and, when $t$ is a multiple of the frequency, the bases are refreshed.

This is the algorithm of `pytorch_optimizer.SOAP` (4.1) with `merge_dims=False`,
`data_format='channels_first'`, `maximize=False`, written here from the paper and checked
against that implementation (tests/test_soap.py). The difference is execution: weights of one
shape are stacked and every matmul, eigendecomposition and QR runs once per shape on a leading
batch dim, instead of once per weight and dim; weights without a preconditioned dim (biases,
norms) take a `torch._foreach_*` Adam. State stays per parameter in `state[p]` (`exp_avg`,
`exp_avg_sq`, `GG`, `Q`; `None` for a dim left unpreconditioned): for the stacked shapes the
entries are views into one buffer per shape, rebuilt from `state[p]` after `load_state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import Tensor

from .eigenbasis import Factors, eigenbases, refresh_eigenbases
from .eigenbasis import householder_q as householder_q  # re-exported for tests, benchmarks
from .step_graph import StepGraph, device_scalars

# ---------------------------------------------------------------------------- pure functions


SMALL_DIM = 4  # dims up to this size (the 3×3 kernels) are contracted elementwise


def contract(x: Tensor, m: Tensor) -> Tensor:
    """x (n, s, *rest) times m (n, s, s') over dim 1, the new dim last: (n, *rest, s').

    A small s is a sum of s scaled slices rather than a matrix product of inner size 3:
    compiled, it fuses with the elementwise work around it instead of a cuBLAS call per dim
    that reads and writes the whole stack for 9 multiply-adds per element.
    """
    n, s = x.size(0), x.size(1)
    if s <= SMALL_DIM:
        shape = (n,) + (1,) * (x.ndim - 2) + (m.size(-1),)
        out = x[:, 0].unsqueeze(-1) * m[:, 0].view(shape)
        for i in range(1, s):
            out = out + x[:, i].unsqueeze(-1) * m[:, i].view(shape)
        return out
    rows = x.reshape(n, s, -1).mT  # (n, R, s)
    return (rows @ m).reshape(n, *x.shape[2:], m.size(-1))


def project(x: Tensor, Q: Factors, back: bool = False) -> Tensor:
    """x (n, *S) rotated dim by dim: ×_k Q_kᵀ (into the eigenbasis), or ×_k Q_k when `back`."""
    for q in Q:  # each pass contracts dim 1 and appends the result as the last dim
        x = x.movedim(1, -1) if q is None else contract(x, q.mT if back else q)
    return x


def gram(x: Tensor, k: int) -> Tensor:
    """G_(k) G_(k)ᵀ per stacked member, G_(k) the mode-k unfolding (n, s_k, ∏_{j≠k} s_j).

    A small s_k is an elementwise product summed over the other dims (see `contract`). Else
    the right operand is laid out as `torch.tensordot` lays it out (a view where one exists,
    else a contiguous copy), so that on the CPU the products are bit-identical to it.
    """
    n, s = x.size(0), x.size(k + 1)
    if s <= SMALL_DIM:
        rows = x.movedim(k + 1, -1)  # (n, …, s)
        return (rows.unsqueeze(-1) * rows.unsqueeze(-2)).sum(dim=tuple(range(1, x.ndim - 1)))
    return x.movedim(k + 1, 1).reshape(n, s, -1) @ x.movedim(k + 1, -1).reshape(n, -1, s)


def update_factors(GG: Factors, G: Tensor, beta: float) -> None:
    """L_k ← β L_k + (1 − β) G_(k) G_(k)ᵀ for every preconditioned dim k, in place."""
    for k, factor in enumerate(GG):
        if factor is not None:
            factor.lerp_(gram(G, k).to(factor.dtype), 1 - beta)


def soap_direction(G: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, Q: Factors,
                   betas: tuple[float, float], eps: float) -> Tensor:
    """back(Q m / (√v + ε)) for a stack (n, *S); updates the moments in place."""
    beta1, beta2 = betas
    exp_avg.lerp_(G, 1 - beta1)
    exp_avg_sq.lerp_(project(G, Q).square(), 1 - beta2)
    denom = exp_avg_sq.sqrt().add_(eps)
    return project(project(exp_avg, Q) / denom, Q, back=True)


def adam_direction(grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor],
                   betas: tuple[float, float], eps: float) -> list[Tensor]:
    """m / (√v + ε) for weights with no preconditioned dim; updates the moments in place."""
    beta1, beta2 = betas
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_lerp_(exp_avg_sqs, torch._foreach_mul(grads, grads), 1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, eps)
    return torch._foreach_div(exp_avgs, denom)


def normalize(directions: list[Tensor], eps: float) -> list[Tensor]:
    """Each direction divided by its RMS + ε (`normalize_gradient`)."""
    return [d / (d.square().mean().sqrt() + eps) for d in directions]


def apply_directions(params: list[Tensor], directions: list[Tensor], size: float | Tensor,
                     decay: float | Tensor, weight_decay: bool) -> None:
    """W ← W − size · direction, then W ← W · decay when `weight_decay`, in place.

    `size` and `decay` are numbers (eager) or 0-d tensors on the parameters' device (compiled:
    a number would be baked into the graph, and both change every step).
    """
    if isinstance(size, Tensor):
        torch._foreach_sub_(params, torch._foreach_mul(directions, size))
    else:
        torch._foreach_add_(params, directions, alpha=-size)
    if weight_decay:
        torch._foreach_mul_(params, decay)


def soap_update(grads: list[Tensor], params: list[list[Tensor]], exp_avgs: list[Tensor],
                exp_avg_sqs: list[Tensor], GGs: list[Factors], Qs: list[Factors],
                plain_grads: list[Tensor], plain: list[Tensor], plain_exp_avgs: list[Tensor],
                plain_exp_avg_sqs: list[Tensor], size: float | Tensor, decay: float | Tensor,
                betas: tuple[float, float], shampoo_beta: float, eps: float, weight_decay: bool,
                normalize_gradient: bool) -> None:
    """One update of a parameter group without the eigenbasis refresh, everything in place.

    Per bucket (stacked gradients `grads[i]` (n, *S) of the weights `params[i]`, stacked state
    `exp_avgs[i]`, `exp_avg_sqs[i]`, `GGs[i]`, `Qs[i]`): the SOAP direction, the weight update
    and decay, the Kronecker factors; then the plain (unpreconditioned) weights take Adam. A
    pure function of tensors and constants, so that `torch.compile` traces it into one graph
    and a CUDA graph can replay it: the numbers that change between steps (`size`, `decay`)
    come in as tensors there, the rest are the group's constants.
    """
    for G, members, exp_avg, exp_avg_sq, GG, Q in zip(grads, params, exp_avgs, exp_avg_sqs,
                                                      GGs, Qs, strict=True):
        directions = list(soap_direction(G, exp_avg, exp_avg_sq, Q, betas, eps).unbind(0))
        if normalize_gradient:
            directions = normalize(directions, eps)
        apply_directions(members, directions, size, decay, weight_decay)
        update_factors(GG, G, shampoo_beta)
    if plain:
        directions = adam_direction(plain_grads, plain_exp_avgs, plain_exp_avg_sqs, betas, eps)
        if normalize_gradient:
            directions = normalize(directions, eps)
        apply_directions(plain, directions, size, decay, weight_decay)


# ---------------------------------------------------------------------------- the optimizer


@dataclass
class _Bucket:
    """Parameters of one shape whose state lives in stacked buffers (views in `state[p]`)."""

    params: list[Tensor]
    exp_avg: Tensor  # (n, *S)
    exp_avg_sq: Tensor  # (n, *S)
    GG: Factors
    Q: Factors


class SOAP(torch.optim.Optimizer):
    """SOAP with the defaults of `pytorch_optimizer.SOAP`; same-shape weights run batched."""

    def __init__(self, params: Iterable[Any], lr: float = 3e-3,
                 betas: tuple[float, float] = (0.95, 0.95), shampoo_beta: float | None = None,
                 weight_decay: float = 1e-2, precondition_frequency: int = 10,
                 max_precondition_dim: int = 10000, precondition_1d: bool = False,
                 correct_bias: bool = True, normalize_gradient: bool = False,
                 eps: float = 1e-8, compile: bool | None = None,
                 cuda_graph: bool | None = None) -> None:
        if not lr > 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1 or weight_decay < 0:
            raise ValueError(f"bad SOAP hyperparameters: lr={lr}, betas={betas}, "
                             f"weight_decay={weight_decay}")
        if precondition_frequency < 1 or max_precondition_dim < 1 or eps < 0:
            raise ValueError(f"bad SOAP settings: precondition_frequency="
                             f"{precondition_frequency}, max_precondition_dim="
                             f"{max_precondition_dim}, eps={eps}")
        defaults = dict(lr=lr, betas=betas, shampoo_beta=shampoo_beta, weight_decay=weight_decay,
                        precondition_frequency=precondition_frequency,
                        max_precondition_dim=max_precondition_dim,
                        precondition_1d=precondition_1d, correct_bias=correct_bias,
                        normalize_gradient=normalize_gradient, eps=eps)
        super().__init__(params, defaults)
        # group index → (the state dict it was built from, ids of its parameters, buckets, plain)
        self._buckets: dict[int, tuple[Any, tuple[int, ...], list[_Bucket], list[Tensor]]] = {}
        self.compile = compile  # None: compiled on CUDA, eager elsewhere
        self.cuda_graph = cuda_graph  # None: on CUDA
        self._update: Any = None
        self._graph: StepGraph | None = None

    def _compiled(self, device: torch.device) -> Any:
        """`soap_update` compiled (`torch.compile`, static shapes), or None to run it eagerly.

        One graph per parameter group and set of shapes; the eigenbasis refresh (`eigh`, QR,
        argsort, every `precondition_frequency` updates) stays eager.
        """
        if not (self.compile if self.compile is not None else device.type == "cuda"):
            return None
        if self._update is None:
            self._update = torch.compile(soap_update, dynamic=False)
        return self._update

    def graphed(self, device: torch.device) -> bool:
        """Whether the update (all groups, refreshes aside) runs through `StepGraph`."""
        return self.cuda_graph if self.cuda_graph is not None else device.type == "cuda"

    @staticmethod
    def _shampoo_beta(group: dict[str, Any]) -> float:
        """β_s of the factors' running average: `shampoo_beta`, else β₂."""
        return group["shampoo_beta"] if group["shampoo_beta"] is not None else group["betas"][1]

    @classmethod
    def _constants(cls, group: dict[str, Any]) -> tuple[Any, ...]:
        """The group's numbers that `soap_update` takes as constants."""
        return (tuple(group["betas"]), cls._shampoo_beta(group), group["eps"],
                group["weight_decay"] != 0, group["normalize_gradient"])

    def _update_groups(self, work: list[tuple[dict[str, Any], Any, list[float]]],
                       stacks: list[Tensor], scalars: list[Any]) -> None:
        """`soap_update` of each group in `work`, its gradients stacked as `step` lists them."""
        stacks_in, scalars_in = iter(stacks), iter(scalars)
        for group, (_, _, buckets, plain), _ in work:
            update = self._compiled(stacks[0].device) or soap_update
            grads = [next(stacks_in) for _ in buckets]
            plain_grads = [next(stacks_in)[0] for _ in plain]
            states = [self.state[p] for p in plain]
            betas, beta, eps, weight_decay, normalize_gradient = self._constants(group)
            update(grads, [b.params for b in buckets], [b.exp_avg for b in buckets],
                   [b.exp_avg_sq for b in buckets], [b.GG for b in buckets],
                   [b.Q for b in buckets], plain_grads, plain, [s["exp_avg"] for s in states],
                   [s["exp_avg_sq"] for s in states], next(scalars_in), next(scalars_in),
                   betas, beta, eps, weight_decay, normalize_gradient)

    @staticmethod
    def _preconditioned(shape: torch.Size, group: dict[str, Any]) -> list[bool]:
        """Per dim of `shape`, whether it gets a factor (1-D weights only by `precondition_1d`)."""
        if len(shape) == 1 and not group["precondition_1d"]:
            return [False]
        return [s <= group["max_precondition_dim"] for s in shape]

    @staticmethod
    def _by_shape(params: list[Tensor]) -> dict[tuple[Any, ...], list[Tensor]]:
        """`params` grouped by (shape, dtype, device): the stacks that run batched."""
        shapes: dict[tuple[Any, ...], list[Tensor]] = {}
        for p in params:
            shapes.setdefault((tuple(p.shape), p.dtype, p.device), []).append(p)
        return shapes

    def _initialise(self, params: list[Tensor], group: dict[str, Any]) -> None:
        """First gradient of `params`: zero moments, factors from it, their eigenbases."""
        beta = self._shampoo_beta(group)
        step, frequency = group["step"], group["precondition_frequency"]
        for members in self._by_shape(params).values():
            p0 = members[0]
            G = torch.stack([p.grad for p in members])
            GG: Factors = [torch.zeros(len(members), s, s, device=p0.device, dtype=p0.dtype)
                           if on else None
                           for s, on in zip(p0.shape, self._preconditioned(p0.shape, group),
                                            strict=True)]
            update_factors(GG, G, beta)
            Q = eigenbases(GG)
            exp_avg_sq = torch.zeros_like(G)
            if step > 0 and step % frequency == 0:  # a parameter first seen at a refresh step
                exp_avg_sq, = refresh_eigenbases([GG], [Q], [exp_avg_sq])
            for i, p in enumerate(members):
                self.state[p].update(
                    exp_avg=torch.zeros_like(p), exp_avg_sq=exp_avg_sq[i].clone(),
                    GG=[None if f is None else f[i].clone() for f in GG],
                    Q=[None if q is None else q[i].clone() for q in Q])

    def _buckets_of(self, index: int, params: list[Tensor],
                    group: dict[str, Any]) -> tuple[list[_Bucket], list[Tensor]]:
        """Stacked buckets and the plain (unpreconditioned) parameters, cached per group.

        The cache holds the state dict it was built from (`load_state_dict` replaces it, so a
        loaded state is restacked) and the parameters stepped; rebuilding stacks `state[p]`
        and makes its entries views.
        """
        key = tuple(id(p) for p in params)
        cached = self._buckets.get(index)
        if cached is not None and cached[0] is self.state and cached[1] == key:
            return cached[2], cached[3]
        buckets: list[_Bucket] = []
        plain: list[Tensor] = []
        for members in self._by_shape(params).values():
            if not any(self._preconditioned(members[0].shape, group)):
                plain += members
                continue
            states = [self.state[p] for p in members]
            stack = {name: torch.stack([s[name] for s in states])
                     for name in ("exp_avg", "exp_avg_sq")}
            factors = {name: [None if parts[0] is None else torch.stack(parts)
                              for parts in zip(*(s[name] for s in states), strict=True)]
                       for name in ("GG", "Q")}
            for i, s in enumerate(states):
                s.update({name: stack[name][i] for name in stack})
                s.update({name: [None if f is None else f[i] for f in factors[name]]
                          for name in factors})
            buckets.append(_Bucket(members, stack["exp_avg"], stack["exp_avg_sq"],
                                   factors["GG"], factors["Q"]))
        self._buckets[index] = (self.state, key, buckets, plain)
        return buckets, plain

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = []  # (group, its bucket cache entry, [size, decay]) of the groups that update
        for index, group in enumerate(self.param_groups):
            group.setdefault("step", 0)
            params = [p for p in group["params"] if p.grad is not None]
            fresh = [p for p in params if not self.state[p]]
            if fresh:
                self._initialise(fresh, group)
                self._buckets.pop(index, None)
            group["step"] += 1
            if group["step"] == 1 or not params:
                continue
            t = group["step"] - 1  # updates so far, this one included
            beta1, beta2 = group["betas"]
            size = group["lr"]
            if group["correct_bias"]:
                size *= math.sqrt(1 - beta2**t) / (1 - beta1**t)
            decay = 1 - group["weight_decay"] * group["lr"]
            self._buckets_of(index, params, group)
            work.append((group, self._buckets[index], [size, decay]))
        if not work:
            return loss
        grads = []  # per group: each bucket's gradients, then each plain one alone
        for _, (_, _, buckets, plain), _ in work:
            grads += [[p.grad for p in b.params] for b in buckets] + [[p.grad] for p in plain]
        device = grads[0][0].device
        scalars = [x for _, _, numbers in work for x in numbers]
        if self.graphed(device):
            if self._graph is None:
                self._graph = StepGraph(capture=device.type == "cuda")
            key = [self.state] + [entry for _, entry, _ in work]
            constants = [(*self._constants(group), self._compiled(device) is not None)
                         for group, _, _ in work]
            self._graph.step(key, constants, partial(self._update_groups, work), grads, scalars)
        else:
            stacks = [torch.stack(members) for members in grads]
            if self._compiled(device) is not None:  # numbers would be baked into its graph
                scalars = device_scalars(scalars, device)
            self._update_groups(work, stacks, scalars)
        for group, (_, _, buckets, _), _ in work:
            if (group["step"] - 1) % group["precondition_frequency"] == 0:
                permuted = refresh_eigenbases([b.GG for b in buckets], [b.Q for b in buckets],
                                              [b.exp_avg_sq for b in buckets])
                torch._foreach_copy_([b.exp_avg_sq for b in buckets], permuted)
        return loss
