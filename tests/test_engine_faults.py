"""Faults the engine must survive (docs/FAULTS.md), in one process, on real files.

- a stop asked for during data generation ends it within a solver transition, keeps the
  finished chunks, and the next call resumes them to the same bits;
- a stop asked for during the quality assessment ends it within a network evaluation, the
  run ends ``interrupted``, and resuming assesses again from the final checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from diffbench.engine.config import Preset, override
from diffbench.engine.dataset import (
    SPLITS,
    GenerationStopped,
    generate_dataset,
    load_split,
    open_dataset,
)
from diffbench.engine.metrics import CheckpointRecord, QualityRecord, StartRecord
from diffbench.engine.quality import AssessmentStopped, assess
from diffbench.engine.run import TrainingData
from diffbench.engine.run_config import RunConfig
from diffbench.engine.training import Trainer
from diffbench.engine.unet import build_model

CPU = torch.device("cpu")


def toy(preset: Preset, **changes) -> Preset:
    return override(preset, {"model.channels": [8, 16], "model.blocks": 1,
                             "train.batch_size": 4, "train.warmup_epochs": 1,
                             "train.samples_every": 0, "train.epochs": 3, **changes})


@pytest.fixture(scope="module")
def data_path(quick_preset, tmp_path_factory) -> Path:
    return generate_dataset(quick_preset, tmp_path_factory.mktemp("data") / "quick.h5",
                            device=CPU)


@pytest.fixture(scope="module")
def data(quick_preset, data_path) -> TrainingData:
    return TrainingData.load(data_path, quick_preset)


def config(preset: Preset, device: str = "cpu") -> RunConfig:
    return RunConfig(preset=preset, optimizer="adamw", lr=2e-3, weight_decay=0.01, seed=3,
                     device=device)


def parameters(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


@pytest.fixture(scope="module")
def whole(quick_preset, data, tmp_path_factory) -> tuple[list[torch.Tensor], QualityRecord]:
    """The toy run uninterrupted: its final parameters and its quality record."""
    trainer = Trainer(config(toy(quick_preset)), data, tmp_path_factory.mktemp("whole"))
    records = list(trainer)
    assert records[-1].state == "done"
    (quality,) = [r for r in records if isinstance(r, QualityRecord)]
    return parameters(trainer), quality


# ----------------------------------------------------------------------------- data generation


class Countdown:
    """A ``stop`` that turns true at its ``n``-th look, and remembers when each look was."""

    def __init__(self, n: int) -> None:
        self.n, self.looks = n, []

    def __call__(self) -> bool:
        self.looks.append(time.perf_counter())
        return len(self.looks) >= self.n


def test_a_stop_mid_chunk_keeps_the_finished_chunks_and_the_next_call_resumes_them(
        quick_preset, data_path, tmp_path):
    data = quick_preset.data  # chunks of 3 trajectories, 8 transitions each
    path, partial = tmp_path / "stopped.h5", tmp_path / "stopped.h5.partial"
    # looks: 1 before chunk 1, 8 after its transitions, 1 before chunk 2, then 3 into it
    stop = Countdown(1 + data.transitions + 1 + 3)
    kept = re.escape(f"3 of 10 trajectories are kept in {partial}")
    with pytest.raises(GenerationStopped, match=kept):
        generate_dataset(quick_preset, path, device=CPU, stop=stop)
    gaps = np.diff(stop.looks)
    print(f"longest time between looks at stop: {gaps.max() * 1e3:.1f} ms")
    assert not path.exists()
    with h5py.File(partial) as file:
        assert file.attrs["trajectories_done"] == data.chunk and "checksum" not in file.attrs

    done = []
    generate_dataset(quick_preset, path, device=CPU,
                     progress=lambda n, total: done.append(n))
    assert done == [6, 9, 10]  # resumed after the kept chunk
    assert not partial.exists()
    assert open_dataset(path).attrs["checksum"] == open_dataset(data_path).attrs["checksum"]
    for split in SPLITS:
        np.testing.assert_array_equal(load_split(path, split), load_split(data_path, split))


def test_a_stop_before_generation_starts_writes_no_trajectory(quick_preset, tmp_path):
    with pytest.raises(GenerationStopped, match="0 of 10"):
        generate_dataset(quick_preset, tmp_path / "never.h5", device=CPU, stop=lambda: True)


def test_a_stop_during_the_checksum_resumes_to_a_complete_file(quick_preset, data_path,
                                                                tmp_path):
    data = quick_preset.data
    chunks = math.ceil(data.trajectories / data.chunk)
    looks = chunks * (1 + data.transitions)  # every look of the simulation, then the checksum
    path = tmp_path / "checksum.h5"
    with pytest.raises(GenerationStopped, match="10 of 10"):
        generate_dataset(quick_preset, path, device=CPU, stop=Countdown(looks + 2))
    assert generate_dataset(quick_preset, path, device=CPU) == path
    assert open_dataset(path).attrs["checksum"] == open_dataset(data_path).attrs["checksum"]


# ----------------------------------------------------------------------------- quality phase


def test_assess_stops_before_the_next_network_evaluation_and_during_scoring(
        quick_preset, data_path):
    model = build_model(toy(quick_preset).model)
    reference = load_split(data_path, "test")
    evaluations: list[int] = []
    model.register_forward_hook(lambda *_: evaluations.append(1))
    with pytest.raises(AssessmentStopped):
        assess(model, reference, quick_preset.data, quick_preset.quality, stop=Countdown(5))
    assert len(evaluations) == 4  # the fifth evaluation never ran
    evaluations.clear()
    stop = Countdown(10**9)
    assess(model, reference, quick_preset.data, quick_preset.quality, stop=stop)
    sampling = len(evaluations)
    assert len(stop.looks) > sampling  # the scoring looks too, between solver chunks
    with pytest.raises(AssessmentStopped):  # a stop once sampling is over ends the scoring
        assess(model, reference, quick_preset.data, quick_preset.quality,
               stop=Countdown(sampling + 1))


def test_a_stop_during_the_quality_phase_ends_interrupted_and_resuming_assesses_again(
        quick_preset, data, whole, tmp_path):
    preset = toy(quick_preset)
    expected = whole[1]

    trainer = Trainer(config(preset), data, tmp_path / "stopped")
    records = []
    for record in trainer:
        records.append(record)
        if isinstance(record, CheckpointRecord) and record.epoch == 3:  # training is over
            trainer.request_stop()
    assert records[-1].state == "interrupted" and records[-1].step == trainer.total_steps
    assert not any(isinstance(r, QualityRecord) for r in records)

    resumed = Trainer(config(preset), data, tmp_path / "stopped", resume=True)
    again = list(resumed)
    assert isinstance(again[0], StartRecord) and again[0].step == trainer.total_steps
    (quality,) = [r for r in again if isinstance(r, QualityRecord)]
    assert again[-1].state == "done"
    def scored(record: QualityRecord) -> str:  # NaN compares equal as text
        return json.dumps({k: v for k, v in record.scores.items() if k != "seconds"},
                          sort_keys=True)

    assert scored(quality) == scored(expected)
