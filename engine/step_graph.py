"""An optimizer's update replayed as one CUDA graph: a few launches per step instead of hundreds.

Muon and SOAP launch hundreds of small kernels per step. When the model's forward and backward
leave the CPU no time to spare (bf16 on an H100), launching them is what the step waits for; a
CUDA graph records the kernels once and replays them with one launch. What that asks of an
update function `update(grads, scalars)`:

- it works on fixed tensors: the gradients arrive in static buffers (one stacked buffer per
  list of same-shape gradients given to `StepGraph.step`), the numbers that change between
  steps (lr, bias corrections) as 0-d tensors of one device vector, and every state tensor is
  updated in place;
- it never synchronises with the host (no `.item()`, no tensor built from host numbers: the
  vector is filled by a non-blocking copy from pinned memory);
- its tensors stay the same from call to call: a new `key` (other parameters, a loaded state
  dict) starts over.

The first `warmup` calls of a key run eagerly on a side stream (torch.compile compiles there,
cuBLAS creates its handles), the next is captured and replayed, later ones only replay. With
`capture=False` (the CPU) every call runs the same function eagerly on the same static tensors,
so the tests can check the graphed path's numerics without a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Update = Callable[[list[Tensor], list[Tensor]], None]


class StepGraph:
    """Static inputs, warm-up and capture of one optimizer's update; `step()` runs it."""

    def __init__(self, capture: bool, warmup: int = 2) -> None:
        self.capture = capture
        self.warmup = warmup
        self._key: tuple[Any, ...] = ()
        self._constants: tuple[Any, ...] = ()
        self._stacks: list[Tensor] = []  # (n, *S) per list of gradients
        self._views: list[Tensor] = []  # their members, in the order the gradients come
        self._scalars = torch.empty(0)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._calls = 0

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def step(self, key: Sequence[Any], constants: Sequence[Any], update: Update,
             grads: list[list[Tensor]], scalars: list[float]) -> None:
        """`update(stacked gradients, scalars)` for this step: eagerly, captured or replayed.

        `key`: the objects the update's tensors belong to, compared by identity (parameters,
        the state dict); `constants`: the numbers baked into it (betas, eps…), by value.
        """
        if not self._same(key, constants):
            self._reset(key, constants, grads, len(scalars))
        flat = [g for members in grads for g in members]
        torch._foreach_copy_(self._views, flat)
        self._scalars.copy_(_pinned(scalars, self._scalars.device), non_blocking=True)
        if self._graph is not None:
            self._graph.replay()
            return
        args = (self._stacks, list(self._scalars.unbind(0)))
        if not self.capture:
            update(*args)
        elif self._calls < self.warmup:
            self._calls += 1
            main = torch.cuda.current_stream(self._scalars.device)
            side = torch.cuda.Stream(self._scalars.device)
            side.wait_stream(main)
            with torch.cuda.stream(side):
                update(*args)
            main.wait_stream(side)
        else:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                update(*args)
            self._graph = graph
            graph.replay()

    def _same(self, key: Sequence[Any], constants: Sequence[Any]) -> bool:
        if len(key) != len(self._key) or tuple(constants) != self._constants:
            return False
        return all(a is b for a, b in zip(key, self._key, strict=True))

    def _reset(self, key: Sequence[Any], constants: Sequence[Any], grads: list[list[Tensor]],
               count: int) -> None:
        self._graph = None  # frees the old graph's memory pool
        self._key, self._constants, self._calls = tuple(key), tuple(constants), 0
        self._stacks = [torch.empty((len(members), *members[0].shape),
                                    dtype=members[0].dtype, device=members[0].device)
                        for members in grads]
        self._views = [view for stack in self._stacks for view in stack.unbind(0)]
        self._scalars = torch.empty(count, dtype=torch.float32, device=grads[0][0].device)


def _pinned(values: list[float], device: torch.device) -> Tensor:
    """`values` in float32 on the host, pinned when bound for CUDA (its pinned block is not
    reused before the copy from it has run, so nothing waits for the device)."""
    host = torch.tensor(values, dtype=torch.float32)
    return host.pin_memory() if device.type == "cuda" else host


def device_scalars(values: list[float], device: torch.device) -> list[Tensor]:
    """`values` as 0-d float32 tensors on `device`, copied without waiting for the device.

    `torch.tensor(values, device="cuda")` would wait for every kernel queued before it.
    """
    return list(_pinned(values, device).to(device, non_blocking=True).unbind(0))
