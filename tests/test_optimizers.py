"""Optimizers: the factory's contract, Muon by hand, SOAP against a float64 re-derivation, the
ScheduleFree modes, Prodigy's options, and "8 samples, loss falls" for each of the six."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import Tensor, nn

from diffbench.engine.config import (
    OptimizerDefaults,
    Preset,
    PresetError,
    load_preset,
    override,
)
from diffbench.engine.muon import Muon, zeropower_via_newtonschulz5
from diffbench.engine.optimizers import (
    OPTIMIZERS,
    OptimizerError,
    build_optimizer,
    muon_split,
    optimizer_implementation,
    optimizer_options,
    scale_lr,
    set_eval_mode,
    set_train_mode,
    uses_external_schedule,
)
from diffbench.engine.unet import build_model

PEAK = {"adamw": 1e-2, "sgd": 1e-2, "muon": 2e-2, "soap": 1e-2, "schedulefree": 1e-2,
        "prodigy": 1.0}
# Prodigy's safeguarded estimate grows from d0 in about a hundred steps; 40 steps need a
# larger start than its 1e-6.
OPTIONS: dict[str, dict[str, float]] = {"prodigy": {"d0": 1e-3}}


class StandIn(nn.Module):
    """The U-Net's kinds of parameter in miniature: time MLP, convs, a time projection, biases."""

    def __init__(self) -> None:
        super().__init__()
        self.time_embedding = nn.Sequential(nn.Linear(1, 8), nn.SiLU(), nn.Linear(8, 4))
        self.head = nn.Conv2d(2, 6, 3, padding=1, padding_mode="circular")
        self.project = nn.Linear(4, 6)  # the per-block Linear(64 → C): 2-D, so Muon's
        self.gain = nn.Parameter(torch.ones(6, 1, 1))  # 3-D but a per-channel scale
        self.tail = nn.Conv2d(6, 2, 3, padding=1, padding_mode="circular")

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        e = self.time_embedding(t[:, None])  # (B, 4)
        h = torch.tanh(self.head(x) + self.project(e)[:, :, None, None])  # (B, 6, H, W)
        return self.tail(self.gain * h)


def _ids(params) -> set[int]:
    return {id(p) for p in params}


# ---------------------------------------------------------------------------- the factory


def test_registry_names_and_unknowns_are_named() -> None:
    assert OPTIMIZERS == ("adamw", "sgd", "muon", "soap", "schedulefree", "prodigy")
    model = StandIn()
    with pytest.raises(OptimizerError, match=r"unknown optimizer 'adam'; known: adamw, sgd, "):
        build_optimizer(model, "adam", 1e-3, 0.0)
    with pytest.raises(OptimizerError, match=r"unknown option 'beta' for optimizer 'adamw'"):
        build_optimizer(model, "adamw", 1e-3, 0.0, beta=(0.9, 0.99))
    with pytest.raises(OptimizerError, match=r"unknown option 'warmup_steps' for optimizer 'soap'"):
        build_optimizer(model, "soap", 1e-3, 0.0, warmup_steps=5)
    with pytest.raises(OptimizerError, match="lr must be a positive number"):
        build_optimizer(model, "sgd", 0.0, 0.0)
    with pytest.raises(OptimizerError, match="weight_decay must be a non-negative number"):
        build_optimizer(model, "sgd", 1e-3, -1.0)
    with pytest.raises(OptimizerError, match="unknown implementation 'fast'"):
        build_optimizer(model, "adamw", 1e-3, 0.0, implementation="fast")
    with pytest.raises(OptimizerError, match="unknown ns_dtype 'half'"):
        build_optimizer(model, "muon", 1e-3, 0.0, ns_dtype="half")
    with pytest.raises(OptimizerError, match="unknown optimizer 'lion'"):
        uses_external_schedule("lion")
    assert issubclass(OptimizerError, ValueError)


def test_options_carry_the_paper_defaults() -> None:
    assert optimizer_options("adamw") == {"betas": (0.9, 0.999), "eps": 1e-8,
                                          "implementation": "auto"}
    assert optimizer_options("sgd")["momentum"] == 0.9
    muon = optimizer_options("muon")
    assert (muon["momentum"], muon["nesterov"], muon["ns_steps"]) == (0.95, True, 5)
    assert (muon["adam_betas"], muon["eps"]) == ((0.95, 0.95), 1e-8)
    soap = optimizer_options("soap")
    assert (soap["betas"], soap["precondition_frequency"], soap["max_precond_dim"]) == (
        (0.95, 0.95), 10, 10000)
    prodigy = optimizer_options("prodigy")
    assert prodigy["safeguard_warmup"] and prodigy["use_bias_correction"]

    adamw = build_optimizer(StandIn(), "adamw", 4.5e-4, 1e-2).param_groups[0]
    assert (adamw["betas"], adamw["eps"], adamw["weight_decay"]) == ((0.9, 0.999), 1e-8, 1e-2)
    sgd = build_optimizer(StandIn(), "sgd", 1e-2, 0.0, nesterov=True).param_groups[0]
    assert (sgd["momentum"], sgd["nesterov"]) == (0.9, True)
    soap = build_optimizer(StandIn(), "soap", 1e-3, 3.2e-2).param_groups[0]
    assert (soap["betas"], soap["precondition_frequency"], soap["max_precondition_dim"]) == (
        (0.95, 0.95), 10, 10000)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_parameter_in_exactly_one_group_with_initial_lr(name: str) -> None:
    model = StandIn()
    optimizer = build_optimizer(model, name, PEAK[name], 0.0)
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    assert len(grouped) == len(_ids(grouped))
    assert _ids(grouped) == _ids(model.parameters())
    scale_lr(optimizer, 0.25)
    assert all(g["initial_lr"] == PEAK[name] and g["lr"] == PEAK[name] / 4
               for g in optimizer.param_groups)
    assert uses_external_schedule(name) == (name != "schedulefree")


def test_muon_split_on_stand_in() -> None:
    model = StandIn()
    muon, adam = muon_split(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in muon) == [
        "gain", "head.weight", "project.weight", "tail.weight"]
    assert sorted(names[id(p)] for p in adam) == [
        "head.bias", "project.bias", "tail.bias", "time_embedding.0.bias",
        "time_embedding.0.weight", "time_embedding.2.bias", "time_embedding.2.weight"]
    assert _ids(muon) | _ids(adam) == _ids(model.parameters())
    assert not _ids(muon) & _ids(adam)
    groups = build_optimizer(model, "muon", 1e-3, 3.2e-2).param_groups
    assert [(g["use_muon"], _ids(g["params"])) for g in groups] == [
        (True, _ids(muon)), (False, _ids(adam))]
    assert all(g["betas"] == (0.95, 0.95) and g["weight_decay"] == 3.2e-2 for g in groups)


def test_muon_split_on_the_unet() -> None:
    model = build_model(load_preset("tiny").model)
    muon, adam = muon_split(model)
    assert _ids(muon) | _ids(adam) == _ids(model.parameters()) and not _ids(muon) & _ids(adam)
    for name, p in model.named_parameters():
        to_muon = id(p) in _ids(muon)
        assert to_muon == (p.ndim >= 2 and not name.startswith("time_embedding.")), name
    projections = [n for n, p in model.named_parameters()
                   if n.endswith("project.weight") and id(p) in _ids(muon)]
    assert projections and all(model.get_parameter(n).ndim == 2 for n in projections)
    convs = [p for p in muon if p.ndim == 4]
    assert sum(p.numel() for p in muon) == sum(p.numel() for p in convs) + sum(
        model.get_parameter(n).numel() for n in projections)


def test_torch_implementation_is_recorded() -> None:
    model = StandIn()
    assert optimizer_implementation(build_optimizer(model, "adamw", 1e-3, 0.0)) == "for-loop"
    assert optimizer_implementation(build_optimizer(model, "sgd", 1e-3, 0.0)) == "for-loop"
    results = {}
    for implementation in ("for-loop", "foreach", "fused"):
        copied = copy.deepcopy(model)
        optimizer = build_optimizer(copied, "adamw", 1e-2, 1e-2, implementation=implementation)
        assert optimizer_implementation(optimizer) == implementation
        _steps(copied, optimizer, 3)
        results[implementation] = torch.cat([p.detach().flatten() for p in copied.parameters()])
    torch.testing.assert_close(results["foreach"], results["for-loop"])
    torch.testing.assert_close(results["fused"], results["for-loop"])
    sgd = build_optimizer(model, "sgd", 1e-3, 0.0, implementation="foreach")
    assert optimizer_implementation(sgd) == "foreach"


def test_descriptions_of_the_others() -> None:
    model = StandIn()
    assert optimizer_implementation(build_optimizer(model, "muon", 1e-3, 0.0)) == (
        "diffbench.muon (NS fp32)")
    assert optimizer_implementation(
        build_optimizer(model, "muon", 1e-3, 0.0, ns_dtype="bfloat16")) == (
        "diffbench.muon (NS bf16)")
    assert optimizer_implementation(build_optimizer(model, "soap", 1e-3, 0.0)) == (
        "diffbench.soap (batched)")
    assert optimizer_implementation(build_optimizer(
        model, "soap", 1e-3, 0.0, implementation="pytorch_optimizer")).startswith(
        "pytorch_optimizer.SOAP 4.")
    assert optimizer_implementation(build_optimizer(model, "schedulefree", 1e-3, 0.0)) == (
        f"schedulefree.AdamWScheduleFree {_version('schedulefree')} (foreach)")
    assert optimizer_implementation(build_optimizer(model, "prodigy", 1.0, 0.0)) == (
        f"prodigyopt.Prodigy {_version('prodigyopt')}")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ---------------------------------------------------------------------------- Muon by hand


def _ns_by_hand(G: Tensor) -> Tensor:
    """Five quintic Newton–Schulz steps in float64, on the wide orientation."""
    X = G.double()
    tall = X.shape[0] > X.shape[1]
    X = X.T if tall else X
    X = X / torch.linalg.matrix_norm(X)
    for _ in range(5):
        A = X @ X.T
        X = 3.4445 * X - 4.7750 * A @ X + 2.0315 * A @ A @ X
    return X.T if tall else X


def test_muon_two_steps_on_a_conv_by_hand() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3)  # weight (3, 2, 3, 3) → Muon as (3, 18); bias (3,) → AdamW
    weight0, bias0 = conv.weight.detach().double().clone(), conv.bias.detach().double().clone()
    lr, wd = 0.02, 0.1
    optimizer = build_optimizer(conv, "muon", lr, wd)
    grads = [(torch.randn(3, 2, 3, 3), torch.randn(3)) for _ in range(2)]

    buffer = torch.zeros(3, 18, dtype=torch.float64)  # classic Nesterov: b ← βb + g, u = g + βb
    m = torch.zeros(3, dtype=torch.float64)
    v = torch.zeros(3, dtype=torch.float64)
    weight, bias = weight0, bias0
    for step, (g_weight, g_bias) in enumerate(grads, start=1):
        conv.weight.grad, conv.bias.grad = g_weight.clone(), g_bias.clone()
        optimizer.step()

        g = g_weight.double().reshape(3, 18)
        buffer = 0.95 * buffer + g
        update = _ns_by_hand(g + 0.95 * buffer) * 0.2 * math.sqrt(18)
        weight = weight * (1 - lr * wd) - lr * update.reshape(3, 2, 3, 3)

        gb = g_bias.double()
        m = 0.95 * m + 0.05 * gb
        v = 0.95 * v + 0.05 * gb**2
        adam = (m / (1 - 0.95**step)) / ((v / (1 - 0.95**step)).sqrt() + 1e-8)
        bias = bias * (1 - lr * wd) - lr * adam

        torch.testing.assert_close(conv.weight.detach().double(), weight, rtol=0, atol=2e-6)
        torch.testing.assert_close(conv.bias.detach().double(), bias, rtol=0, atol=1e-6)
    assert not torch.allclose(weight, weight0 * (1 - lr * wd) ** 2, atol=1e-3)  # it moved


def test_muon_transposes_tall_matrices_and_scales_by_the_long_side() -> None:
    torch.manual_seed(1)
    linear = nn.Linear(3, 7, bias=False)  # weight (7, 3): rows > cols
    weight0 = linear.weight.detach().double().clone()
    optimizer = build_optimizer(linear, "muon", 0.01, 0.0, nesterov=False)
    g = torch.randn(7, 3)
    linear.weight.grad = g.clone()
    optimizer.step()
    expected = weight0 - 0.01 * 0.2 * math.sqrt(7) * _ns_by_hand(g)  # momentum (1-β)g: same dir
    torch.testing.assert_close(linear.weight.detach().double(), expected, rtol=0, atol=1e-6)


def test_newton_schulz_is_nearly_orthogonal() -> None:
    torch.manual_seed(2)
    for shape in [(16, 48), (48, 16), (32, 32)]:
        G = torch.randn(shape)
        X = zeropower_via_newtonschulz5(G)
        assert X.shape == G.shape and X.dtype == torch.float32
        singular = torch.linalg.svdvals(X)
        assert singular.min() > 0.6 and singular.max() < 1.25, (shape, singular)
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        cosine = (X * (U @ Vh)).sum() / (X.norm() * (U @ Vh).norm())
        assert cosine > 0.98
        torch.testing.assert_close(X.double(), _ns_by_hand(G), rtol=0, atol=1e-5)
    bf16 = zeropower_via_newtonschulz5(G, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), X, rtol=0, atol=0.05)


def test_muon_rejects_groups_without_a_kind() -> None:
    with pytest.raises(ValueError, match="use_muon"):
        Muon([{"params": [nn.Parameter(torch.ones(2, 2))]}], lr=1e-3, weight_decay=0.0)
    with pytest.raises(ValueError, match="2 or more dims"):
        Muon([{"params": [nn.Parameter(torch.ones(2))], "use_muon": True}], lr=1e-3,
             weight_decay=0.0)


# ---------------------------------------------------------------------------- SOAP


def _mode_product(x: Tensor, Q: Tensor, mode: int) -> Tensor:
    """x ×_mode Qᵀ: contracts axis `mode` of x with the rows of Q."""
    return torch.movedim(torch.tensordot(x, Q, dims=([mode], [0])), -1, mode)


class SoapByHand:
    """SOAP (Vyas et al. 2024, Algorithm 1) in float64, written from the paper for this test.

    Per weight: Kronecker factors L_i ← β₂L_i + (1 − β₂) G_(i) G_(i)ᵀ per axis (1-D: none);
    eigenbases Q_i (eigh first, then one power step + QR every `frequency` updates, columns
    ordered by the estimated eigenvalues, the second moment permuted alike); Adam with the first
    moment in the original space and the second moment in the rotated one. The first call only
    sets up the factors, as the reference implementation does.
    """

    def __init__(self, params: list[Tensor], lr: float, wd: float, frequency: int) -> None:
        self.params = [p.detach().double().clone() for p in params]
        self.lr, self.wd, self.frequency = lr, wd, frequency
        self.b1, self.b2, self.eps = 0.95, 0.95, 1e-8
        self.state: list[dict] = [{} for _ in params]

    def rotate(self, x: Tensor, Qs: list[Tensor], back: bool = False) -> Tensor:
        for mode, Q in enumerate(Qs):
            x = _mode_product(x, Q.T if back else Q, mode)
        return x

    def factors(self, state: dict, g: Tensor) -> None:
        for mode in range(g.ndim if g.ndim > 1 else 0):
            unfolded = torch.movedim(g, mode, 0).reshape(g.shape[mode], -1)
            state["L"][mode] = self.b2 * state["L"][mode] + (1 - self.b2) * unfolded @ unfolded.T

    def step(self, grads: list[Tensor]) -> None:
        for i, g in enumerate(grads):
            g, state = g.double(), self.state[i]
            if not state:
                n_modes = g.ndim if g.ndim > 1 else 0
                state.update(n=0, m=torch.zeros_like(g), v=torch.zeros_like(g),
                             L=[torch.zeros(g.shape[k], g.shape[k], dtype=g.dtype)
                                for k in range(n_modes)])
                self.factors(state, g)
                state["Q"] = [torch.linalg.eigh(L)[1].flip(1) for L in state["L"]]
                continue
            state["n"] += 1
            n, Qs = state["n"], state["Q"]
            state["m"] = self.b1 * state["m"] + (1 - self.b1) * g
            state["v"] = self.b2 * state["v"] + (1 - self.b2) * self.rotate(g, Qs) ** 2
            direction = self.rotate(self.rotate(state["m"], Qs) / (state["v"].sqrt() + self.eps),
                                    Qs, back=True)
            size = self.lr * math.sqrt(1 - self.b2**n) / (1 - self.b1**n)
            self.params[i] = (self.params[i] - size * direction) * (1 - self.lr * self.wd)
            self.factors(state, g)
            if n % self.frequency == 0:
                for mode, (L, Q) in enumerate(zip(state["L"], Qs, strict=True)):
                    power = L @ Q
                    order = torch.argsort((Q * power).sum(0), descending=True)
                    state["v"] = state["v"].index_select(mode, order)
                    Qs[mode] = torch.linalg.qr(power[:, order])[0]


@pytest.mark.parametrize("frequency", [3, 10])
def test_soap_matches_the_algorithm_in_float64(frequency: int) -> None:
    torch.manual_seed(3)
    # Full-rank factors from one gradient (a degenerate eigenspace has no canonical basis):
    # conv (3, 2, 3, 3), square linear (4, 4), biases.
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.Flatten(), nn.Linear(4, 4)).double()
    params = list(model.parameters())
    lr, wd = 3e-2, 3.2e-2
    optimizer = build_optimizer(model, "soap", lr, wd, precondition_frequency=frequency)
    reference = SoapByHand(params, lr, wd, frequency)
    start = [p.detach().clone() for p in params]
    for step in range(25):
        grads = [torch.randn_like(p) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        optimizer.step()
        reference.step(grads)
        # Exact to float64 rounding until the first refresh (update `frequency`, call
        # `frequency + 1`); pytorch-optimizer then runs the QR in float32, as the reference
        # implementation does, so agreement is to float32 rounding of the basis.
        tolerance = 1e-12 if step <= frequency else 1e-6
        for p, expected in zip(params, reference.params, strict=True):
            torch.testing.assert_close(p.detach(), expected, rtol=0, atol=tolerance)
    moved = min(float((p.detach() - p0).abs().max()) for p, p0 in zip(params, start, strict=True))
    assert moved > 1e-2  # 1e-6 is a tight bound on what SOAP did


# ---------------------------------------------------------------------------- ScheduleFree, Prodigy


def test_schedulefree_modes_move_parameters_between_y_and_x() -> None:
    torch.manual_seed(4)
    model = StandIn()
    optimizer = build_optimizer(model, "schedulefree", 1e-2, 1e-2, warmup_steps=2)
    assert optimizer.param_groups[0]["train_mode"]  # born ready for step()
    _steps(model, optimizer, 4)
    y = [p.detach().clone() for p in model.parameters()]
    z = [optimizer.state[p]["z"].clone() for p in model.parameters()]
    set_eval_mode(optimizer)
    beta1 = optimizer.param_groups[0]["betas"][0]
    for p, y_p, z_p in zip(model.parameters(), y, z, strict=True):
        x = (y_p - (1 - beta1) * z_p) / beta1  # y = (1 − β₁) z + β₁ x
        torch.testing.assert_close(p.detach(), x, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(p.detach(), y_p) for p, y_p in zip(model.parameters(), y,
                                                                    strict=True))
    set_eval_mode(optimizer)  # idempotent
    set_train_mode(optimizer)
    for p, y_p in zip(model.parameters(), y, strict=True):
        torch.testing.assert_close(p.detach(), y_p, rtol=1e-6, atol=1e-7)
    with pytest.raises(Exception, match="train mode"):
        set_eval_mode(optimizer)
        optimizer.step()


def test_schedulefree_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(5)
    model = StandIn()
    optimizer = build_optimizer(model, "schedulefree", 1e-2, 1e-2, warmup_steps=3)
    _steps(model, optimizer, 3)
    twin = copy.deepcopy(model)
    resumed = build_optimizer(twin, "schedulefree", 1e-2, 1e-2, warmup_steps=3)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    assert resumed.param_groups[0]["k"] == 3
    _steps(model, optimizer, 3, seed=9)
    _steps(twin, resumed, 3, seed=9)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_muon_state_dict_round_trip_continues_identically() -> None:
    torch.manual_seed(6)
    model = StandIn()
    optimizer = build_optimizer(model, "muon", 1e-2, 3.2e-2)
    _steps(model, optimizer, 2)
    twin = copy.deepcopy(model)
    resumed = build_optimizer(twin, "muon", 1e-2, 3.2e-2)
    resumed.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    _steps(model, optimizer, 2, seed=9)
    _steps(twin, resumed, 2, seed=9)
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_prodigy_runs_with_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(7)
    model = StandIn()
    optimizer = build_optimizer(model, "prodigy", 1.0, 1e-2, d_coef=2.0, d0=1e-5)
    assert capsys.readouterr().out == ""  # prodigyopt's print is swallowed
    group = optimizer.param_groups[0]
    assert len(optimizer.param_groups) == 1
    assert group["safeguard_warmup"] and group["use_bias_correction"] and group["decouple"]
    assert (group["d_coef"], group["d"]) == (2.0, 1e-5)
    scale_lr(optimizer, 0.5)
    _steps(model, optimizer, 40)
    assert optimizer.param_groups[0]["d"] > 1.5e-5  # the step size estimate grew


# ---------------------------------------------------------------------------- 8 samples, loss falls


def _loss(model: nn.Module, seed: int = 0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(8, 2, 6, 6, generator=generator)
    t = torch.rand(8, generator=generator)
    target = torch.roll(x, 1, dims=-1) * (1 + t[:, None, None, None])
    return (model(x, t) - target).square().mean()


def _steps(model: nn.Module, optimizer: torch.optim.Optimizer, n: int, seed: int = 0) -> None:
    for i in range(n):
        optimizer.zero_grad()
        _loss(model, seed + i).backward()
        optimizer.step()


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_eight_samples_loss_falls(name: str) -> None:
    torch.manual_seed(8)
    model = StandIn()
    optimizer = build_optimizer(model, name, PEAK[name], 1e-4, **OPTIONS.get(name, {}))
    with torch.no_grad():
        before = float(_loss(model))
    for _ in range(40):
        optimizer.zero_grad()
        _loss(model).backward()
        optimizer.step()
    set_eval_mode(optimizer)
    with torch.no_grad():
        after = float(_loss(model))
    assert after < 0.5 * before, (name, before, after)


# ---------------------------------------------------------------------------- presets


def test_presets_hold_the_papers_best_settings() -> None:
    best = {"adamw": (4.5e-4, 1e-2), "muon": (1e-3, 3.2e-2), "soap": (1e-3, 3.2e-2),
            "schedulefree": (4.5e-4, 1e-2), "prodigy": (1.0, 1e-2)}
    for preset in ("paper", "small", "tiny"):
        optimizers = load_preset(preset).optimizers
        assert tuple(optimizers) == OPTIMIZERS[:6]  # the paper's six, in order
        for name, (lr, wd) in best.items():
            assert optimizers[name] == OptimizerDefaults(lr=lr, weight_decay=wd), (preset, name)
        assert optimizers["sgd"].lr > 0
        with pytest.raises(TypeError):
            optimizers["adamw"] = OptimizerDefaults(1.0, 0.0)  # type: ignore[index]


def test_optimizer_section_round_trips_and_overrides() -> None:
    paper = load_preset("paper")
    table = json.loads(json.dumps(paper.to_dict()))
    assert table["optimizers"]["muon"] == {"lr": 1e-3, "weight_decay": 3.2e-2}
    assert Preset.from_dict(table) == paper
    changed = override(paper, {"optimizers.muon.lr": 2e-3, "train.epochs": 8})
    assert changed.optimizers["muon"] == OptimizerDefaults(2e-3, 3.2e-2)
    assert changed.optimizers["adamw"] == paper.optimizers["adamw"] and changed.train.epochs == 8
    with pytest.raises(PresetError, match=r"unknown key optimizers\.muon\.momentum"):
        override(paper, {"optimizers.muon.momentum": 0.9})
    with pytest.raises(PresetError, match=r"unknown key optimizers\.lion\.lr"):
        override(paper, {"optimizers.lion.lr": 0.9})


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t.pop("optimizers"), r"missing section \[optimizers\]"),
    (lambda t: t["optimizers"].update(soap=1.0), r"\[optimizers\.soap\] must be a table"),
    (lambda t: t["optimizers"].update(lion={"lr": 1.0, "weight_decay": 0.0}),
     r"unknown optimizer \[optimizers\.lion\]; known: adamw, "),
    (lambda t: t["optimizers"]["sgd"].pop("weight_decay"),
     r"missing key optimizers\.sgd\.weight_decay"),
    (lambda t: t["optimizers"]["sgd"].update(momentum=0.9),
     r"unknown key optimizers\.sgd\.momentum"),
    (lambda t: t["optimizers"]["muon"].update(lr=0),
     r"optimizers\.muon\.lr must be a positive number"),
    (lambda t: t["optimizers"]["muon"].update(weight_decay=-1),
     r"optimizers\.muon\.weight_decay must be a non-negative number"),
    (lambda t: t["optimizers"]["adamw"].update(lr="1e-3"),
     r"optimizers\.adamw\.lr must be a number"),
])
def test_optimizer_section_errors_name_the_key(edit, message: str) -> None:
    table = load_preset("tiny").to_dict()
    edit(table)
    with pytest.raises(PresetError, match=message):
        Preset.from_dict(table)
