"""Faults the engine must survive (docs/FAULTS.md), in one process, on real files.

- a stop asked for during data generation ends it within a solver transition, keeps the
  finished chunks, and the next call resumes them to the same bits;
- a stop asked for during the quality assessment ends it within a network evaluation, the
  run ends ``interrupted``, and resuming assesses again from the final checkpoint;
- a damaged latest checkpoint (truncated, bit-flipped, its pointer garbled) gives way to the
  one before, and the resumed run ends bit for bit where an uninterrupted one does;
- a checkpoint write that fails for want of space keeps the previous checkpoint and reaches
  the training thread as `CheckpointWriteError` naming the step kept.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from diffbench.engine.checkpoint import (
    CheckpointError,
    CheckpointWriteError,
    CheckpointWriter,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from diffbench.engine.config import Preset, override
from diffbench.engine.dataset import (
    SPLITS,
    GenerationStopped,
    generate_dataset,
    load_split,
    open_dataset,
)
from diffbench.engine.metrics import CheckpointRecord, QualityRecord, StartRecord, StatusRecord
from diffbench.engine.quality import AssessmentStopped, assess
from diffbench.engine.run import TrainingData
from diffbench.engine.run_config import RunConfig
from diffbench.engine.training import Trainer
from diffbench.engine.unet import build_model
from tests.helpers import no_space

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


# ----------------------------------------------------------------------------- checkpoints


def damage_truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def damage_flip(path: Path) -> None:
    """One byte in the middle of the file (inside a tensor's data) flipped: `torch.load`
    alone reads such a file without complaint; its zip record's CRC-32 does not match."""
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage", [damage_truncate, damage_flip])
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(
        damage, quick_preset, data, whole, tmp_path):
    preset = toy(quick_preset)

    folder = tmp_path / "damaged"
    first = Trainer(config(preset), data, folder)
    for record in first:
        if isinstance(record, StatusRecord):
            break
    checkpoints = folder / "checkpoints"
    latest = latest_checkpoint(checkpoints)
    assert sorted(p.name for p in checkpoints.glob("step-*.pt")) == \
        ["step-00000004.pt", "step-00000006.pt"] and latest.name == "step-00000006.pt"
    damage(latest)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(latest)

    resumed = Trainer(config(preset), data, folder, resume=True)
    assert resumed.step == 4 and resumed.resumed_from.name == "step-00000004.pt"
    (reason,) = resumed.skipped
    assert "step-00000006.pt" in reason
    records = list(resumed)
    assert records[0].provenance["skipped_checkpoints"] == [reason]
    assert records[-1].state == "done" and resumed.step == 6
    for a, b in zip(whole[0], parameters(resumed), strict=True):
        assert torch.equal(a, b)
    assert load_checkpoint(latest_checkpoint(checkpoints))["step"] == 6  # rewritten whole


def test_a_garbled_pointer_falls_back_to_the_newest_file_that_loads(tmp_path):
    for step in (3, 6):
        save_checkpoint(tmp_path, {"step": step, "epoch": 1, "w": torch.ones(2)}, keep=2)
    (tmp_path / "latest.json").write_text('{"checkp')
    resumed = resume_checkpoint(tmp_path)
    assert resumed.path.name == "step-00000006.pt" and resumed.state["step"] == 6
    assert "unreadable pointer" in resumed.skipped[0]


def test_no_usable_checkpoint_is_an_error_naming_each_file_and_none_is_none(tmp_path):
    assert resume_checkpoint(tmp_path) is None
    for step in (3, 6):
        save_checkpoint(tmp_path, {"step": step, "epoch": 1, "w": torch.ones(2)}, keep=2)
    for path in tmp_path.glob("step-*.pt"):
        damage_truncate(path)
    with pytest.raises(CheckpointError, match="no usable checkpoint") as error:
        resume_checkpoint(tmp_path)
    assert "step-00000006.pt" in str(error.value) and "step-00000003.pt" in str(error.value)
    assert len(list(tmp_path.glob("step-*.pt"))) == 2  # nothing removed


def test_a_checkpoint_after_resuming_from_an_earlier_one_removes_the_later_files(tmp_path):
    for step in (3, 6, 9):
        save_checkpoint(tmp_path, {"step": step, "epoch": 1}, keep=2)
    save_checkpoint(tmp_path, {"step": 7, "epoch": 1}, keep=2)  # resumed from 6, stopped at 7
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == \
        ["step-00000006.pt", "step-00000007.pt"]


# ----------------------------------------------------------------------------- a full disk


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
@pytest.mark.parametrize("where", ["write", "fsync"])
def test_no_space_while_writing_keeps_the_previous_checkpoint_and_names_it(tmp_path,
                                                                           monkeypatch, where):
    """ENOSPC injected by monkeypatching the lowest calls that fail on a full disk (`no_space`);
    tests/test_worker_stops.py fills a real tmpfs under a worker."""
    writer = CheckpointWriter(tmp_path, keep=2)
    writer.submit({"step": 4, "epoch": 2, "w": torch.ones(3)})
    writer.wait()
    no_space(monkeypatch, after_step=4, where=where)
    writer.submit({"step": 6, "epoch": 3, "w": torch.zeros(1000)})
    with pytest.raises(CheckpointWriteError) as raised:
        writer.wait()
    message = str(raised.value)
    assert message.startswith("no space left on device while writing checkpoint "
                              "step-00000006.pt in ")
    assert message.endswith("(previous checkpoint at step 4 kept)")
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-00000004.pt"]
    assert torch.equal(load_checkpoint(latest_checkpoint(tmp_path))["w"], torch.ones(3))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd (Linux)")
def test_the_trainer_ends_with_the_write_error_at_the_next_epoch(quick_preset, data, tmp_path,
                                                                 monkeypatch):
    trainer = Trainer(config(toy(quick_preset, **{"train.epochs": 6})), data, tmp_path)
    no_space(monkeypatch, after_step=2, where="write")  # the second checkpoint's write fails
    seen = []
    with pytest.raises(CheckpointWriteError, match=r"previous checkpoint at step 2 kept"):
        for record in trainer:
            seen.append(record)
    assert [r.step for r in seen if isinstance(r, CheckpointRecord)] == [2]
    assert trainer.epoch <= 3  # noticed at the epoch after the failed write, not at the end
    assert load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))["step"] == 2
