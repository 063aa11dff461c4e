"""The batched SOAP (`diffbench.engine.soap`) against pytorch-optimizer's SOAP, and its state.

Both optimizers get the same gradients at every step (drawn from a fixed generator, not from a
loss), so what is compared is the two update rules, not a training trajectory that feeds
rounding back through the model. The weights have full-rank Kronecker factors from the first
gradient: in a degenerate eigenspace the eigenbasis is any basis, so the first rounding
difference picks another one (pytorch-optimizer disagrees with itself by 6e-2 after one step
when its gradients are perturbed by 1e-7 there).
"""

from __future__ import annotations

import io

import pytest
import torch
from pytorch_optimizer import SOAP as ReferenceSOAP
from torch import Tensor, nn

from diffbench.engine.optimizers import build_optimizer, optimizer_implementation
from diffbench.engine.soap import SOAP, project, soap_update

SETTINGS = dict(lr=3e-2, betas=(0.95, 0.95), weight_decay=3.2e-2, max_precondition_dim=10000,
                eps=1e-8)


def small_model() -> nn.Module:
    """Convs of two shapes, each at least twice; square linears (two of one shape); biases."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),  # (4, 4, 3, 3) × 2 …
        nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1),
        nn.Conv2d(6, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1),  # … (6, 6, 3, 3) × 2
        nn.Flatten(), nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(5, 5),  # (8, 8) × 2, (5, 5)
    )  # no forward: the gradients are drawn, so only the shapes matter


def params_of(model: nn.Module) -> list[Tensor]:
    return list(model.parameters())


def gradients(params: list[Tensor], steps: int) -> list[list[Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [[torch.randn(p.shape, generator=generator) for p in params] for _ in range(steps)]


def run(optimizer: torch.optim.Optimizer, params: list[Tensor], grads: list[list[Tensor]]):
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        yield [p.detach().clone() for p in params]


@pytest.mark.parametrize("frequency", [3, 10])
def test_batched_soap_matches_pytorch_optimizer(frequency: int) -> None:
    ours, theirs = small_model(), small_model()
    mine, reference = params_of(ours), params_of(theirs)
    assert [p.shape for p in mine] == [p.shape for p in reference]
    shapes = [tuple(p.shape) for p in mine]
    assert shapes.count((4, 4, 3, 3)) == 2 and shapes.count((6, 6, 3, 3)) == 2
    assert shapes.count((8, 8)) == 2 and shapes.count((5, 5)) == 1
    steps = 27
    grads = gradients(mine, steps)
    a = SOAP(mine, precondition_frequency=frequency, **SETTINGS)
    b = ReferenceSOAP(reference, precondition_frequency=frequency, **SETTINGS)
    start = [p.detach().clone() for p in mine]
    refreshes = 0
    for step, (x, y) in enumerate(zip(run(a, mine, grads), run(b, reference, grads),
                                      strict=True)):
        refreshes += step > 1 and (step - 1) % frequency == 0  # after update `step - 1`
        for p, q in zip(x, y, strict=True):
            relative = float((p - q).norm() / q.norm())
            assert relative <= 1e-5, (step, tuple(p.shape), relative)
    assert refreshes >= 2
    moved = min(float((p.detach() - p0).abs().max()) for p, p0 in zip(mine, start, strict=True))
    assert moved > 1e-2  # the updates are not vanishingly small against the tolerance


def test_state_dict_round_trip_continues_bit_identically() -> None:
    model = small_model()
    params = params_of(model)
    grads = gradients(params, 24)
    optimizer = SOAP(params, precondition_frequency=3, **SETTINGS)
    for _ in run(optimizer, params, grads[:11]):
        pass
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    *_, uninterrupted = run(optimizer, params, grads[11:])

    buffer.seek(0)
    saved = torch.load(buffer)
    resumed_model = small_model()
    resumed = params_of(resumed_model)
    resumed_model.load_state_dict(saved["model"])
    optimizer = SOAP(resumed, precondition_frequency=3, **SETTINGS)
    optimizer.load_state_dict(saved["optimizer"])
    *_, after_resume = run(optimizer, resumed, grads[11:])
    for p, q in zip(uninterrupted, after_resume, strict=True):
        assert torch.equal(p, q)
    # and the state saved after resuming is the state of the uninterrupted run
    state = optimizer.state_dict()["state"]
    assert set(state[0]) == {"exp_avg", "exp_avg_sq", "GG", "Q"}
    assert state[0]["GG"][0].shape == (4, 4) and state[1]["GG"] == [None]  # a bias: plain Adam


@pytest.mark.slow
def test_compiled_update_matches_eager_and_traces_into_one_graph() -> None:
    """`compile=True` (the default on CUDA) against eager on the CPU, refreshes every 3 updates:
    the same steps to rounding, and `soap_update` traces with no graph break."""
    torch._dynamo.reset()
    eager_model, compiled_model = small_model(), small_model()
    eager, compiled = params_of(eager_model), params_of(compiled_model)
    grads = gradients(eager, 27)
    a = SOAP(eager, precondition_frequency=3, compile=False, **SETTINGS)
    b = SOAP(compiled, precondition_frequency=3, compile=True, **SETTINGS)
    assert optimizer_implementation(b) == "diffbench.soap (batched, compiled)"
    for step, (x, y) in enumerate(zip(run(a, eager, grads), run(b, compiled, grads),
                                      strict=True)):
        for p, q in zip(x, y, strict=True):
            relative = float((p - q).norm() / q.norm())
            assert relative <= 1e-6, (step, tuple(p.shape), relative)

    calls = []
    a._update = lambda *args: calls.append(args) or soap_update(*args)
    a.compile = True
    for p, g in zip(eager, grads[0], strict=True):
        p.grad = g.clone()
    a.step()
    with torch.no_grad():  # as in `step()`
        explained = torch._dynamo.explain(soap_update)(*calls[0])
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained


def test_project_round_trips_through_orthogonal_bases() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    Q = [torch.linalg.qr(torch.randn(2, s, s, dtype=torch.float64))[0] for s in (3, 4)] + [None]
    rotated = project(x, Q)
    assert rotated.shape == x.shape
    expected = torch.einsum("nabc,nai,nbj->nijc", x, Q[0], Q[1])  # x ×₁ Q₁ᵀ ×₂ Q₂ᵀ
    torch.testing.assert_close(rotated, expected)
    torch.testing.assert_close(project(rotated, Q, back=True), x)


def test_the_factory_selects_either_implementation() -> None:
    model = small_model()
    params_of(model)
    batched = build_optimizer(model, "soap", 1e-3, 0.0)
    assert isinstance(batched, SOAP)
    assert optimizer_implementation(batched) == "diffbench.soap (batched)"
    reference = build_optimizer(model, "soap", 1e-3, 0.0, implementation="pytorch_optimizer")
    assert optimizer_implementation(reference).startswith("pytorch_optimizer.SOAP 4.")
    with pytest.raises(ValueError, match="batched SOAP only"):
        build_optimizer(model, "soap", 1e-3, 0.0, implementation="pytorch_optimizer",
                        compile=True)
    with pytest.raises(ValueError, match="unknown implementation 'fast'"):
        build_optimizer(model, "soap", 1e-3, 0.0, implementation="fast")
