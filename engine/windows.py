"""Training samples: random windows of consecutive states, one per trajectory per epoch.

SDA trains on windows of 5 states cut at a random time from each trajectory; an epoch sees
every training trajectory exactly once, in random order. A window of L states becomes 2L
channels, u and v stacked time-major: channel 2k is u at state k, channel 2k + 1 is v.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


class WindowSampler:
    """Batches ``(B, 2 · window, H, W)`` from trajectories ``(N, T, 2, H, W)``, resumable.

    The epoch's order and window starts are drawn from the sampler's own generator when the
    epoch begins; `state_dict` keeps the generator state of that moment plus the batch index,
    so a restored sampler yields exactly the batches the original had left.

    They are drawn on the CPU and moved to the data's device once per epoch, from pinned
    memory without waiting: cutting a batch then never synchronises with the device.
    """

    def __init__(self, data: Tensor, batch_size: int, *, window: int = 5, seed: int = 0):
        if data.ndim != 5 or data.shape[2] != 2:
            raise ValueError(f"expected trajectories (N, T, 2, H, W), got {tuple(data.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 < window <= data.shape[1]:
            raise ValueError(f"window {window} does not fit trajectories of {data.shape[1]}")
        self.data = data
        self.batch_size = batch_size
        self.window = window
        self.generator = torch.Generator().manual_seed(seed)
        self._offsets = torch.arange(window, device=data.device)
        self.epoch = 0
        self._begin_epoch()

    @property
    def epoch_steps(self) -> int:
        """Batches per epoch; the last one is partial (paper: ceil(819 / 32) = 26)."""
        return math.ceil(len(self.data) / self.batch_size)

    def _begin_epoch(self) -> None:
        """Draw this epoch's trajectory order and window starts."""
        self._epoch_state = self.generator.get_state()
        trajectories, length = self.data.shape[:2]
        order = torch.randperm(trajectories, generator=self.generator)
        starts = torch.randint(length - self.window + 1, (trajectories,), generator=self.generator)
        self._order, self._starts = (_to_device(v, self.data.device) for v in (order, starts))
        self.step = 0

    def __iter__(self) -> Iterator[Tensor]:
        """The remaining batches of the current epoch."""
        epoch = self.epoch
        while self.epoch == epoch:
            yield self._next_batch()

    def _next_batch(self) -> Tensor:
        """The batch at the current position, which then moves on (to the next epoch after the
        last batch), so a checkpoint taken while the batch is in use resumes after it."""
        index = self._order[self.step * self.batch_size:(self.step + 1) * self.batch_size]
        batch = self._windows(index)
        self.step += 1
        if self.step == self.epoch_steps:
            self.epoch += 1
            self._begin_epoch()
        return batch

    def _windows(self, index: Tensor) -> Tensor:
        """Windows of trajectories ``index`` at their epoch's starts, time-major channels."""
        time = self._starts[index, None] + self._offsets  # (B, L)
        states = self.data[index[:, None], time]  # (B, L, 2, H, W)
        return states.flatten(1, 2)  # (B, 2L, H, W)

    def _layout(self) -> dict[str, int]:
        """What a saved position is only meaningful for."""
        return {"trajectories": len(self.data), "batch_size": self.batch_size,
                "window": self.window}

    def state_dict(self) -> dict[str, Any]:
        """Position (epoch, batch within it) and the generator state the epoch was drawn from."""
        return {"epoch": self.epoch, "step": self.step, "generator": self._epoch_state.clone(),
                **self._layout()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at the saved position; the data and batching must be the saved ones."""
        for key, value in self._layout().items():
            if state[key] != value:
                raise ValueError(f"sampler state has {key}={state[key]}, this sampler has {value}")
        if not 0 <= state["step"] < self.epoch_steps:
            raise ValueError(f"sampler state has step={state['step']} outside the epoch")
        self.epoch = state["epoch"]
        self.generator.set_state(state["generator"])
        self._begin_epoch()
        self.step = state["step"]


def _to_device(values: Tensor, device: torch.device) -> Tensor:
    """``values`` on ``device``; to CUDA from pinned memory without a host synchronisation."""
    if device.type != "cuda":
        return values
    return values.pin_memory().to(device, non_blocking=True)
