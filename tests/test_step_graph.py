"""The GPU fast paths of Muon and SOAP, checked on the CPU.

`cuda_graph=True` on the CPU runs exactly what a CUDA graph would capture (static gradient
buffers, the step's numbers as 0-d tensors) eagerly, so its arithmetic is compared here with
the plain path; `householder_q` and the elementwise contraction of small dims against torch's
QR and matrix products.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from diffbench.engine import soap
from diffbench.engine.optimizers import build_optimizer, optimizer_implementation
from diffbench.engine.step_graph import StepGraph


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3),
                         nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(5, 3))


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=generator)
        optimizer.step()


def max_relative(a: nn.Module, b: nn.Module) -> float:
    return max(float((p.detach() - q.detach()).norm() / q.detach().norm())
               for p, q in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("name, options", [
    ("muon", {}), ("soap", {"precondition_frequency": 3, "compile": False})])
def test_graphed_path_matches_the_plain_one(name: str, options: dict) -> None:
    plain, graphed = small_model(), small_model()
    a = build_optimizer(plain, name, 3e-2, 3.2e-2, cuda_graph=False, **options)
    b = build_optimizer(graphed, name, 3e-2, 3.2e-2, cuda_graph=True, **options)
    assert optimizer_implementation(b).endswith(", CUDA graph)")
    assert not optimizer_implementation(a).endswith(", CUDA graph)")
    start = copy.deepcopy(plain)
    train(plain, a, 10)
    train(graphed, b, 10)
    assert max_relative(graphed, plain) <= 1e-6
    assert max_relative(plain, start) > 1e-2  # it moved

    # a loaded state dict replaces the tensors the graph was built on: it starts over
    twin = copy.deepcopy(graphed)
    resumed = build_optimizer(twin, name, 3e-2, 3.2e-2, cuda_graph=True, **options)
    resumed.load_state_dict(copy.deepcopy(b.state_dict()))
    train(graphed, b, 4, seed=2)
    train(twin, resumed, 4, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(graphed.parameters(), twin.parameters(),
                                                 strict=True))


def test_step_graph_feeds_static_stacks_and_starts_over_on_a_new_key() -> None:
    seen: list[tuple[list[Tensor], list[Tensor]]] = []
    graph = StepGraph(capture=False)
    grads = [[torch.ones(2, 3), 2 * torch.ones(2, 3)], [torch.arange(4.0)]]
    key = [object()]
    graph.step(key, [1], lambda g, s: seen.append((g, s)), grads, [0.5, 2.0])
    stacks, scalars = seen[-1]
    assert [tuple(s.shape) for s in stacks] == [(2, 2, 3), (1, 4)]
    assert torch.equal(stacks[0][1], grads[0][1]) and torch.equal(stacks[1][0], grads[1][0])
    assert [float(s) for s in scalars] == [0.5, 2.0] and scalars[0].dim() == 0
    graph.step(key, [1], lambda g, s: seen.append((g, s)), [[3 * g for g in m] for m in grads],
               [1.0, 1.0])
    assert seen[-1][0][0] is stacks[0] and float(stacks[0][0, 0, 0]) == 3.0  # same buffers
    graph.step([object()], [1], lambda g, s: seen.append((g, s)), grads, [1.0, 1.0])
    assert seen[-1][0][0] is not stacks[0]  # another key: new buffers
    graph.step(key, [2], lambda g, s: seen.append((g, s)), grads, [1.0, 1.0])
    assert seen[-2][0][0] is not seen[-1][0][0]  # other constants: new buffers too


@pytest.mark.parametrize("s", [3, 20, 150])
def test_householder_q_is_torchs_qr(s: int) -> None:
    generator = torch.Generator().manual_seed(s)
    P = torch.randn(4, s, s, generator=generator) @ torch.diag(torch.logspace(0, -6, s))
    P[0] = 0  # every reflector the identity
    P[1, :, -1] = 0  # a zero column
    P[2, :, 1] = P[2, :, 0]  # rank-deficient
    Q = soap.householder_q(P)
    torch.testing.assert_close(Q, torch.linalg.qr(P)[0], rtol=0, atol=2e-6)
    torch.testing.assert_close(Q.mT @ Q, torch.eye(s).expand_as(Q), rtol=0, atol=2e-6)


def test_small_dims_contract_elementwise_as_the_matrix_product(
        monkeypatch: pytest.MonkeyPatch) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, 3, 3, generator=generator)
    Q = [torch.linalg.qr(torch.randn(2, s, s, generator=generator))[0] for s in x.shape[1:]]
    Q[1] = None  # a dim left unpreconditioned
    fast = [soap.project(x, Q), soap.project(x, Q, back=True),
            *(soap.gram(x, k) for k in range(4))]
    monkeypatch.setattr(soap, "SMALL_DIM", 0)
    slow = [soap.project(x, Q), soap.project(x, Q, back=True),
            *(soap.gram(x, k) for k in range(4))]
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
