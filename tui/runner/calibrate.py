"""A calibration: each optimizer's full training step timed side by side on this device and
preset (`engine.step_timing.interleaved`: interleaved rounds, the first a warm-up), stored
per (device, preset) in the job database (`storage.calibration`), for honest step-time
ratios and a time axis the report and the dashboard take from it.

A round gives each optimizer one epoch of ``steps`` steps of the preset's U-Net on random
windows of the preset's shape, with its preset defaults (lr, weight decay), the run-level
settings of a queued run (fp32 unless ``precision``, channels-last, compiled where it pays);
per optimizer and round the mean ms of data + forward/backward + optimizer, which is what a
run's ``ms_per_step`` counts. The device label is the one runs record
(`storage.step_ratios.device_label` of the trainer's provenance), so runs find it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from typing import Any

from diffbench.storage.calibration import Calibration, save_calibration
from diffbench.storage.db import Database
from diffbench.storage.step_ratios import device_label

ROUNDS, STEPS = 5, 20  # timed rounds, steps per optimizer and round (defaults)


def calibrate(db: Database, preset: str, optimizers: Sequence[str], *, device: str = "auto",
              rounds: int = ROUNDS, steps: int = STEPS, precision: str = "fp32",
              compile: bool | None = None,
              on_round: Callable[[int, int], None] | None = None) -> Calibration:
    """Time ``optimizers`` on ``preset`` (a name or a preset file's path, as runs name it)
    for ``rounds`` timed rounds after one warm-up and store the result; ``on_round(done,
    total)`` after each round."""
    import torch

    from diffbench.engine.config import load_preset
    from diffbench.engine.step_timing import interleaved

    loaded = load_preset(preset)
    rows = [(name, name, {}) for name in optimizers]
    total = rounds + 1
    timings = interleaved(loaded, rows, device, precision, total, steps, compile=compile,
                          on_round=None if on_round is None else
                          (lambda k: on_round(k + 1, total)))
    provenance = timings[0].provenance
    label = device_label(provenance)
    if label is None:  # the trainer always records its device
        raise RuntimeError("the trainer recorded no device")
    settings: dict[str, Any] = {
        "precision": precision, "compile": provenance.get("compile"),
        "cuda_graph": provenance.get("cuda_graph"), "threads": provenance.get("threads"),
        "torch": torch.__version__, "cuda": provenance.get("cuda"),
        "diffbench": provenance.get("diffbench"), "git_commit": provenance.get("git_commit"),
        "batch_size": loaded.train.batch_size, "parameters": provenance.get("parameters"),
        "warmup_rounds": 1}
    return save_calibration(
        db, device=label, preset=preset, host=socket.gethostname(), steps=steps,
        rounds_ms={name: t.round_ms() for name, t in zip(optimizers, timings, strict=True)},
        implementations={name: t.implementation
                         for name, t in zip(optimizers, timings, strict=True)},
        settings=settings)
