"""The six optimizers behind one factory, `build_optimizer(model, name, lr, weight_decay, …)`.

Each builder has one signature, `(model, lr, weight_decay, *, option=default, …)`; its
keyword-only arguments are the options it accepts, with the paper's defaults (spec §5), and
any other option is an error naming it. Every parameter group carries `initial_lr`, which
`scale_lr` multiplies by the schedule's value (`diffbench.engine.schedules.lr_multiplier`).

Sources: AdamW and SGD are torch's; Muon is in the project (`diffbench.engine.muon`); SOAP is
in the project too (`diffbench.engine.soap`, batched; `implementation="pytorch_optimizer"`
selects `pytorch_optimizer.SOAP`, the reference it is tested against); ScheduleFree is
`schedulefree.AdamWScheduleFree`; Prodigy is `prodigyopt.Prodigy`. docs/OPTIMIZERS.md gives
the reasons.
"""

from __future__ import annotations

import contextlib
import inspect
import io
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import torch
from torch import nn

from diffbench.engine.muon import Muon
from diffbench.engine.schedules import SCHEDULES
from diffbench.engine.soap import SOAP
from diffbench.engine.vocabulary import OWN_SCHEDULE, lr_problem, weight_decay_problem

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "OptimizerError",
    "build_optimizer",
    "muon_split",
    "optimizer_implementation",
    "optimizer_options",
    "scale_lr",
    "set_eval_mode",
    "set_train_mode",
    "uses_external_schedule",
]


class OptimizerError(ValueError):
    """An unknown optimizer or option, or a bad value; the message names it."""


Builder = Callable[..., torch.optim.Optimizer]

IMPLEMENTATIONS = ("auto", "fused", "foreach", "for-loop")


def _torch_flags(model: nn.Module, implementation: str) -> dict[str, bool]:
    """`fused`/`foreach` flags for torch's AdamW and SGD, resolved now so they can be recorded.

    `auto` is fused on CUDA (torch's fastest; a slow baseline would flatter the others) and the
    for-loop elsewhere, torch's own default on CPU.
    """
    if implementation not in IMPLEMENTATIONS:
        raise OptimizerError(f"unknown implementation {implementation!r}; "
                             f"known: {', '.join(IMPLEMENTATIONS)}")
    if implementation == "auto":
        on_cuda = all(p.device.type == "cuda" for p in model.parameters())
        implementation = "fused" if on_cuda else "for-loop"
    return {"fused": implementation == "fused", "foreach": implementation == "foreach"}


def _one_group(model: nn.Module, lr: float) -> list[dict[str, Any]]:
    return [{"params": list(model.parameters()), "initial_lr": lr}]


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    if len(value) != 2:
        raise OptimizerError(f"option {name} must be a pair of numbers, got {value!r}")
    return float(value[0]), float(value[1])


def _adamw(model: nn.Module, lr: float, weight_decay: float, *,
           betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
           implementation: str = "auto") -> torch.optim.Optimizer:
    return torch.optim.AdamW(_one_group(model, lr), lr=lr, betas=_pair(betas, "betas"), eps=eps,
                             weight_decay=weight_decay, **_torch_flags(model, implementation))


def _sgd(model: nn.Module, lr: float, weight_decay: float, *, momentum: float = 0.9,
         nesterov: bool = False, implementation: str = "auto") -> torch.optim.Optimizer:
    return torch.optim.SGD(_one_group(model, lr), lr=lr, momentum=momentum, nesterov=nesterov,
                           weight_decay=weight_decay, **_torch_flags(model, implementation))


def muon_split(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon, AdamW) parameters: weights of 2+ dims outside `time_embedding` go to Muon.

    The per-block time projections Linear(64 → C) are 2-D weights, so they go to Muon; the
    time-embedding MLP, biases and every other 1-D parameter go to the inner AdamW. The name
    test looks at every component, so wrappers (`_orig_mod.time_embedding.…`) split alike.
    """
    muon: list[nn.Parameter] = []
    adam: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        in_embedding = "time_embedding" in name.split(".")
        (muon if p.ndim >= 2 and not in_embedding else adam).append(p)
    return muon, adam


_NS_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16}


def _muon(model: nn.Module, lr: float, weight_decay: float, *, momentum: float = 0.95,
          nesterov: bool = True, ns_steps: int = 5, adam_betas: Sequence[float] = (0.95, 0.95),
          eps: float = 1e-8, ns_dtype: str = "auto",
          cuda_graph: bool | None = None) -> torch.optim.Optimizer:
    """`cuda_graph`: replay the update as one CUDA graph; None: on CUDA (docs/OPTIMIZERS.md)."""
    if ns_dtype not in _NS_DTYPES:
        raise OptimizerError(f"unknown ns_dtype {ns_dtype!r}; known: {', '.join(_NS_DTYPES)}")
    muon, adam = muon_split(model)
    groups = [{"params": params, "use_muon": use_muon, "initial_lr": lr}
              for params, use_muon in ((muon, True), (adam, False)) if params]
    return Muon(groups, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                ns_steps=ns_steps, adam_betas=_pair(adam_betas, "adam_betas"), eps=eps,
                ns_dtype=_NS_DTYPES[ns_dtype], cuda_graph=cuda_graph)


SOAP_IMPLEMENTATIONS = ("batched", "pytorch_optimizer")


def _soap(model: nn.Module, lr: float, weight_decay: float, *,
          betas: Sequence[float] = (0.95, 0.95), precondition_frequency: int = 10,
          max_precond_dim: int = 10000, eps: float = 1e-8,
          implementation: str = "batched", compile: bool | None = None,
          cuda_graph: bool | None = None) -> torch.optim.Optimizer:
    """`batched` is ours (`diffbench.engine.soap`); `pytorch_optimizer` its reference.

    Batched only: `compile` runs the update outside the refreshes through `torch.compile`,
    `cuda_graph` replays it as one CUDA graph; None: on CUDA.
    """
    if implementation not in SOAP_IMPLEMENTATIONS:
        raise OptimizerError(f"unknown implementation {implementation!r}; "
                             f"known: {', '.join(SOAP_IMPLEMENTATIONS)}")
    extra: dict[str, Any] = {}
    if implementation == "batched":
        soap: type[torch.optim.Optimizer] = SOAP
        extra.update(compile=compile, cuda_graph=cuda_graph)
    elif compile or cuda_graph:
        option = "compile" if compile else "cuda_graph"
        raise OptimizerError(f"{option}=True is an option of the batched SOAP only")
    else:
        from pytorch_optimizer import SOAP as soap  # 1.5 s of imports: only when asked for

    return soap(_one_group(model, lr), lr=lr, betas=_pair(betas, "betas"),
                weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                max_precondition_dim=max_precond_dim, eps=eps, **extra)


def _schedulefree(model: nn.Module, lr: float, weight_decay: float, *,
                  betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8,
                  warmup_steps: int = 0, r: float = 0.0,
                  weight_lr_power: float = 2.0) -> torch.optim.Optimizer:
    from schedulefree import AdamWScheduleFree

    optimizer = AdamWScheduleFree(_one_group(model, lr), lr=lr, betas=_pair(betas, "betas"),
                                  eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
                                  r=r, weight_lr_power=weight_lr_power)
    optimizer.train()  # born in eval mode, which refuses step()
    return optimizer


def _prodigy(model: nn.Module, lr: float, weight_decay: float, *,
             betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, d0: float = 1e-6,
             d_coef: float = 1.0, safeguard_warmup: bool = True,
             use_bias_correction: bool = True) -> torch.optim.Optimizer:
    from prodigyopt import Prodigy

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Using decoupled weight decay"
        return Prodigy(_one_group(model, lr), lr=lr, betas=_pair(betas, "betas"), eps=eps,
                       weight_decay=weight_decay, decouple=True, d0=d0, d_coef=d_coef,
                       safeguard_warmup=safeguard_warmup,
                       use_bias_correction=use_bias_correction)


_BUILDERS: dict[str, Builder] = {
    "adamw": _adamw,
    "sgd": _sgd,
    "muon": _muon,
    "soap": _soap,
    "schedulefree": _schedulefree,
    "prodigy": _prodigy,
}

OPTIMIZERS: tuple[str, ...] = tuple(_BUILDERS)


def _builder(name: str) -> Builder:
    if name not in _BUILDERS:
        raise OptimizerError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMIZERS)}")
    return _BUILDERS[name]


def optimizer_options(name: str) -> dict[str, Any]:
    """The options `name` accepts, with their defaults."""
    parameters = inspect.signature(_builder(name)).parameters.values()
    return {p.name: p.default for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float,
                    **options: Any) -> torch.optim.Optimizer:
    """Optimizer `name` over every parameter of `model`, each group with `initial_lr = lr`."""
    builder = _builder(name)
    known = optimizer_options(name)
    for key in options:
        if key not in known:
            raise OptimizerError(f"unknown option {key!r} for optimizer {name!r}; "
                                 f"known: {', '.join(known) or 'none'}")
    for problem in (lr_problem(lr), weight_decay_problem(weight_decay)):
        if problem is not None:
            raise OptimizerError(problem)
    optimizer = builder(model, lr, weight_decay, **options)
    _prove_split(model, optimizer)
    return optimizer


def _prove_split(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every parameter of `model` in exactly one group, and nothing else."""
    grouped = [p for group in optimizer.param_groups for p in group["params"]]
    if len(grouped) != len({id(p) for p in grouped}):
        raise OptimizerError("a parameter appears in two groups")
    if {id(p) for p in grouped} != {id(p) for p in model.parameters()}:
        raise OptimizerError("the parameter groups do not cover exactly the model's parameters")


def scale_lr(optimizer: torch.optim.Optimizer, multiplier: float) -> None:
    """Set every group's lr to `initial_lr · multiplier` (the schedule's value at a step)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier


def uses_external_schedule(name: str) -> bool:
    """Whether the trainer applies a schedule; ScheduleFree only gets its own warm-up."""
    _builder(name)
    return name not in OWN_SCHEDULE


def _is_schedulefree(optimizer: torch.optim.Optimizer) -> bool:
    return type(optimizer).__module__.startswith("schedulefree.")


def set_train_mode(optimizer: torch.optim.Optimizer) -> None:
    """Parameters at ScheduleFree's y (for `step()` and resume checkpoints); no-op otherwise."""
    if _is_schedulefree(optimizer):
        optimizer.train()


def set_eval_mode(optimizer: torch.optim.Optimizer) -> None:
    """Parameters at ScheduleFree's average x (validation, sampling, exported weights)."""
    if _is_schedulefree(optimizer):
        optimizer.eval()


def optimizer_implementation(optimizer: torch.optim.Optimizer) -> str:
    """Which code runs `step()`: fused/foreach/for-loop for torch's, a description otherwise."""
    if isinstance(optimizer, torch.optim.AdamW | torch.optim.SGD):
        group = optimizer.param_groups[0]
        if group.get("fused"):
            return "fused"
        return "foreach" if group.get("foreach") else "for-loop"
    if isinstance(optimizer, Muon):
        devices = [p.device for g in optimizer.param_groups if g["use_muon"] for p in g["params"]]
        device = devices[0] if devices else torch.device("cpu")
        dtype = optimizer.newton_schulz_dtype(device)
        graph = ", CUDA graph" if optimizer.graphed(device) else ""
        return f"diffbench.muon (NS {'bf16' if dtype == torch.bfloat16 else 'fp32'}{graph})"
    if isinstance(optimizer, SOAP):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        device = params[0].device if params else torch.device("cpu")
        compiled = ", compiled" if optimizer._compiled(device) is not None else ""
        graph = ", CUDA graph" if optimizer.graphed(device) else ""
        return f"diffbench.soap (batched{compiled}{graph})"
    module = type(optimizer).__module__.split(".")[0]
    package = {"pytorch_optimizer": "pytorch-optimizer"}.get(module, module)
    detail = ""
    if _is_schedulefree(optimizer):
        detail = " (foreach)" if optimizer.param_groups[0].get("foreach") else " (for-loop)"
    return f"{module}.{type(optimizer).__name__} {version(package)}{detail}"
