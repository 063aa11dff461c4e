"""Each optimizer's full training step timed side by side, by the trainer itself.

Every optimizer trains the preset's U-Net on random windows of the preset's shape (the
data's values do not change the time of a step) through `Trainer`, whose step records split
each step into data, forward+backward (with gradient norm and clipping) and optimizer step,
timed with CUDA events on a GPU. The optimizers take turns, one epoch of ``steps`` steps
each per round (A B C A B C …), so that drift of the machine (clocks, other load) falls on
all of them alike; the first round is a warm-up (cuDNN autotuning, torch.compile, CUDA graph
capture, first preconditioners) and is left out.

Used by `diffbench calibrate` (`tui.runner.calibrate`: per optimizer, the mean ms of each
round, stored per device and preset) and by ``benchmarks/step_time.py`` (medians per phase,
MFU).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .config import Preset, override
from .metrics import EpochRecord, StartRecord, StepRecord, Steps
from .run import TrainingData
from .run_config import RunConfig
from .training import Trainer

#: An optimizer to time: (label, optimizer name, its options).
Row = tuple[str, str, dict[str, Any]]


def synthetic_data(preset: Preset, steps_per_epoch: int) -> TrainingData:
    """Random trajectories: as many as fill ``steps_per_epoch`` full batches, window long."""
    b, window, n = preset.train.batch_size, preset.model.window, preset.data.resolution
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(b * steps_per_epoch, window, 2, n, n, generator=generator)
    return TrainingData(train=train, valid=train[:2].clone())


@dataclass
class Timing:
    """What one optimizer's trainer reported over its timed rounds."""

    implementation: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    epoch_s: list[float] = field(default_factory=list)

    def median(self, phase: str) -> float:
        return statistics.median(getattr(s, f"{phase}_ms") for s in self.steps)

    def mean_step(self) -> float:
        """Mean forward+backward + optimizer ms over every timed step (refreshes included)."""
        return statistics.fmean(s.compute_ms + s.optimizer_ms for s in self.steps)

    def wall(self) -> float:
        return 1e3 * sum(self.epoch_s) / len(self.steps)

    def round_ms(self) -> list[float]:
        """Each timed round's mean full step (data + forward/backward + optimizer), in ms:
        what a run's ``ms_per_step`` counts."""
        rounds: dict[int, list[float]] = {}
        for s in self.steps:
            rounds.setdefault(s.epoch, []).append(s.data_ms + s.compute_ms + s.optimizer_ms)
        return [statistics.fmean(rounds[epoch]) for epoch in sorted(rounds)]


def interleaved(preset: Preset, rows: Sequence[Row], device: str, precision: str,
                rounds: int, steps: int, *, on_round: Callable[[int], None] | None = None,
                **settings: Any) -> list[Timing]:
    """Every row's trainer, one epoch of ``steps`` steps each in turn, for ``rounds`` rounds;
    rounds 2… timed. ``settings``: further `RunConfig` fields (``compile``, ``cuda_graph``,
    ``channels_last``); ``on_round(k)`` after round k (0: the warm-up)."""
    preset = override(preset, {"train.epochs": rounds, "train.warmup_epochs": 1,
                               "train.valid_every": rounds, "train.samples_every": 0})
    data = synthetic_data(preset, steps)
    trainers = []
    for _, name, options in rows:
        defaults = preset.optimizers[name]
        config = RunConfig(preset=preset, optimizer=name, lr=defaults.lr,
                           weight_decay=defaults.weight_decay, device=device,
                           precision=precision, options=options, **settings)
        trainers.append(iter(Trainer(config, data, flush_every=10**9)))
    timings = [Timing() for _ in rows]
    for index in range(rounds):
        for (label, _, _), records, timing in zip(rows, trainers, timings, strict=True):
            for record in records:
                if isinstance(record, StartRecord):
                    timing.provenance = dict(record.provenance)
                    timing.implementation = record.provenance["optimizer_implementation"]
                elif isinstance(record, Steps):
                    timing.steps += [s for s in record.records if s.epoch > 0]
                elif isinstance(record, EpochRecord):
                    if record.epoch > 0:
                        timing.epoch_s.append(record.epoch_s)
                    break
                elif getattr(record, "state", "done") != "done":
                    raise RuntimeError(f"{label}: {record}")
        if on_round is not None:
            on_round(index)
    return timings
