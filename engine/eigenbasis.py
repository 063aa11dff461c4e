r"""SOAP's eigenbasis of the Kronecker factors: found once by `eigh`, then refreshed.

The first basis of each factor $L_k$ is its eigenvectors, eigenvalues descending
(`eigenbases`). Every `precondition_frequency` updates after that, one power step
$P = L_k Q_k$ with columns ordered by the estimated eigenvalues
$\mathrm{diag}(Q_k^\top L_k Q_k)$ descending, and $Q_k \leftarrow \mathrm{qr}(P)$ in float32
(`refresh_eigenbases`); the second moment is permuted alike along dim $k$.

This is the eager part of a SOAP step (eigh, QR and argsort run between the compiled
updates, `engine/soap.py`), so it is written for few launches: the QRs of all factors of
one size run as one batch, through a Householder QR formed in compact WY form
(`householder_q`). Factors come as stacks (n, s, s), one per stacked shape and dim, or None
for a dim left unpreconditioned.
"""

from __future__ import annotations

import torch
from torch import Tensor

Factors = list[Tensor | None]  # per dim: (n, s, s) stacked, or None (dim not preconditioned)


def eigenbases(GG: Factors) -> Factors:
    """Eigenvectors of each L_k, columns by eigenvalue descending (the first basis)."""
    bases: Factors = []
    for factor in GG:
        if factor is None:
            bases.append(None)
            continue
        eye = torch.eye(factor.size(-1), device=factor.device, dtype=factor.dtype)
        try:
            _, q = torch.linalg.eigh(factor + 1e-30 * eye)
        except RuntimeError:  # pragma: no cover - ill-conditioned in low precision
            _, q = torch.linalg.eigh(factor.double() + 1e-30 * eye.double())
            q = q.to(factor.dtype)
        bases.append(q.flip(-1))
    return bases


GEQRF_STREAMS = 8  # CUDA streams the one-by-one factorisations are spread over


def _geqrf(P: Tensor) -> tuple[Tensor, Tensor]:
    """`torch.geqrf` of a stack (n, s, s): batched for s ≤ 128, else one matrix at a time.

    cuBLAS's batched `geqrf`, which torch takes for ≥ s/16 matrices of s ≤ 256, is slow for
    s > 128 (18 ms for twelve 192² on an H100 against 6 ms one by one), and above 256 torch
    calls cuSOLVER once per matrix anyway: about 1 ms for a 384², mostly latency. On CUDA the
    one-by-one calls go out over `GEQRF_STREAMS` streams, so that several run at once. On the
    CPU, LAPACK takes one matrix at a time either way.
    """
    if P.size(-1) <= 128 or not P.is_cuda:
        return torch.geqrf(P)
    main = torch.cuda.current_stream(P.device)
    streams = [torch.cuda.Stream(P.device) for _ in range(min(GEQRF_STREAMS, P.size(0)))]
    parts = []
    for i, matrix in enumerate(P.split(1)):
        stream = streams[i % len(streams)]
        stream.wait_stream(main)
        with torch.cuda.stream(stream):
            parts.append(torch.geqrf(matrix))
    for stream in streams:
        main.wait_stream(stream)
    for part in parts:  # made on a side stream, used and freed on the main one
        for tensor in part:
            tensor.record_stream(main)
    return torch.cat([a for a, _ in parts]), torch.cat([tau for _, tau in parts])


def householder_q(P: Tensor) -> Tensor:
    """Q of the Householder QR of each P (n, s, s), as `torch.linalg.qr` computes it, batched.

    `geqrf` gives the reflectors (V unit lower triangular, τ); Q = H₁⋯H_s is then formed at
    once in the compact WY form Q = I − V T Vᵀ with T⁻¹ = striu(VᵀV) + diag(1/τ) (Joffrain et
    al. 2006), two batched products and a triangular solve in float64, where
    `householder_product` makes one cuSOLVER call per matrix. A reflector with τ = 0 is the
    identity and drops out. The same Q as `torch.linalg.qr` to rounding
    (tests/test_step_graph.py).
    """
    a, tau = _geqrf(P)
    a, tau = a.double(), tau.double()
    eye = torch.eye(P.size(-1), device=P.device, dtype=torch.float64)
    keep = tau != 0
    V = (a.tril(-1) + eye) * keep.unsqueeze(-2)
    inverse = (V.mT @ V).triu(1) + torch.diag_embed(torch.where(keep, 1 / tau, 1.0))
    return (eye - V @ torch.linalg.solve_triangular(inverse, V.mT, upper=True)).to(P.dtype)


def refresh_eigenbases(GGs: list[Factors], Qs: list[Factors],
                       exp_avg_sqs: list[Tensor]) -> list[Tensor]:
    """One power step + QR per factor of every stack, in place on `Qs`; returns the
    `exp_avg_sqs` permuted to match. The QRs of all factors of one size run as one batch."""
    powers: dict[int, list[tuple[Tensor, Tensor]]] = {}  # s → [(Q_k, its power step)]
    permuted = []
    for GG, Q, exp_avg_sq in zip(GGs, Qs, exp_avg_sqs, strict=True):
        n = exp_avg_sq.size(0)
        for k, (factor, q) in enumerate(zip(GG, Q, strict=True)):
            if factor is None or q is None:
                continue
            power = factor @ q  # (n, s, s)
            order = (q * power).sum(dim=1).argsort(dim=-1, descending=True)  # (n, s)
            shape = [n] + [1] * (exp_avg_sq.ndim - 1)
            shape[k + 1] = order.size(-1)
            exp_avg_sq = exp_avg_sq.gather(k + 1, order.view(shape).expand_as(exp_avg_sq))
            power = power.gather(2, order.unsqueeze(1).expand_as(power))
            powers.setdefault(q.size(-1), []).append((q, power))
        permuted.append(exp_avg_sq)
    for pairs in powers.values():
        bases = householder_q(torch.cat([power for _, power in pairs]).to(torch.float32))
        for (q, _), basis in zip(pairs, bases.split([q.size(0) for q, _ in pairs]),
                                 strict=True):
            q.copy_(basis)
    return permuted
