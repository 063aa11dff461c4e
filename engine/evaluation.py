"""What a run measures on its model besides training: validation losses (stochastic,
fixed-noise, and fixed-noise by noise level), previews, and the finished run's sample
quality. ScheduleFree is measured with its averaged weights (`set_eval_mode`); every
measurement draws from its own fixed seed or generator, so it changes nothing training
reads and two runs' numbers compare.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import rng
from .backends import autocast, sync_time
from .dataset import load_split
from .diffusion import (
    LOSS_BINS,
    FixedNoise,
    binned_loss,
    binned_noise,
    fixed_noise_loss,
    validation_loss,
)
from .metrics import QualityRecord, Record, SampleRecord
from .optimizers import set_eval_mode, set_train_mode
from .quality import assess
from .run import TrainingData
from .run_config import RunConfig
from .sampling import sample_windows
from .vorticity import vorticity
from .windows import WindowSampler

PREVIEW_SEED = 0  # the preview noise, the same for every run and epoch: pictures compare
QUALITY_SEED = 1  # the assessment's noise, the same for every run: scores compare
PICTURED = 5  # states per trajectory kept as pictures of the assessment (report figure)


class Evaluation:
    """The measurements of one run's ``model``; the validation windows and generator are the
    trainer's (they are part of its checkpoint), the fixed-noise sets are drawn here, once."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 config: RunConfig, data: TrainingData, device: torch.device,
                 valid_windows: WindowSampler, generator: torch.Generator, *,
                 batch_size: int) -> None:
        self.model, self.optimizer, self.data, self.device = model, optimizer, data, device
        self.preset, self.precision = config.preset, config.precision
        self.valid_windows, self.generator, self.batch_size = valid_windows, generator, batch_size
        window = self.preset.model.window
        self.fixed = FixedNoise.draw(data.valid, window).to(device)
        self.binned = binned_noise(data.valid, window).to(device)

    def validate(self) -> tuple[float, float, tuple[float, ...]]:
        """Stochastic and fixed-noise validation losses, and the fixed-noise loss in each
        t-bin of `diffusion.LOSS_BINS`, with ScheduleFree's averaged weights."""
        set_eval_mode(self.optimizer)
        try:
            windows = next(iter(self.valid_windows))
            with autocast(self.device, self.precision):
                valid = validation_loss(self.model, windows, self.generator,
                                        batch_size=self.preset.train.batch_size)
                fixed = fixed_noise_loss(self.model, self.fixed, batch_size=self.batch_size)
                bins = binned_loss(self.model, self.binned, len(LOSS_BINS) - 1,
                                   batch_size=self.batch_size)
        finally:
            set_train_mode(self.optimizer)
        return valid, fixed, bins

    def preview(self, count: int, steps: int) -> Any:
        """``count`` generated windows (count, window, 2, H, W) as float32 NumPy, drawn from the
        same preview noise every time (so successive previews show the model change), from
        the assessment's start and mean setting (`QualityConfig`), so they show the samples
        the run is judged by."""
        window, quality = self.preset.model.window, self.preset.quality
        size = self.data.valid.shape[-1]
        set_eval_mode(self.optimizer)
        self.model.eval()
        try:
            generator = rng.seeded(PREVIEW_SEED, self.device)
            with torch.no_grad(), autocast(self.device, self.precision):
                x = sample_windows(self.model, count, (2 * window, size, size), steps=steps,
                                   generator=generator, t_start=quality.t_start,
                                   remove_mean=quality.remove_mean)
        finally:
            self.model.train()
            set_train_mode(self.optimizer)
        return x.float().cpu().reshape(count, window, 2, size, size).numpy()

    def quality(self, epoch: int, step: int,
                stop: Callable[[], bool] | None = None) -> Iterator[Record]:
        """Sample quality against the test split (engine/quality.py), in fp32, with the
        validation split as the data-vs-data floor, timed apart; then `PICTURED` states of
        the first two generated and test trajectories, for the report. Nothing when the preset
        turns it off or the data have no file to read the test split from (data built in
        memory, as benchmarks do). Once ``stop()`` is true, `quality.AssessmentStopped` is
        raised within a network evaluation or a solver chunk, before any record."""
        settings = self.preset.quality
        if not settings.enabled or not self.data.source:
            return
        began = sync_time(self.device)
        reference = load_split(Path(self.data.source), "test")
        generator = rng.seeded(QUALITY_SEED, self.device)
        result = assess(self.model, reference, self.preset.data, settings,
                        generator=generator, batch_size=self.batch_size,
                        floor=self.data.valid.numpy(), stop=stop)
        scores = dataclasses.replace(result.scores, seconds=sync_time(self.device) - began)
        yield QualityRecord(epoch=epoch, step=step, scores=scores.to_dict())
        count = min(2, len(result.generated), len(reference))
        for name, fields in (("quality", result.generated), ("quality-data", reference)):
            picks = np.unique(np.linspace(0, fields.shape[1] - 1, PICTURED).round().astype(int))
            velocity = np.asarray(fields[:count, picks], dtype=np.float32)
            yield SampleRecord(epoch=epoch, step=step, velocity=velocity,
                               vorticity=vorticity(velocity).astype("float32"), seconds=0.0,
                               name=name)
