"""The trainer: loss falls, divergence stops the run, timings, records, exact resume.

Everything runs on the CPU (or the GPU `--device cuda` names) with a toy U-Net (channels
8/16, one block per level) on the shared quick data set (10 trajectories of 5 states at 16²,
split 8/1/1), so a step takes a few milliseconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from diffbench.engine.checkpoint import latest_checkpoint, load_checkpoint
from diffbench.engine.config import Preset, override
from diffbench.engine.dataset import generate_dataset
from diffbench.engine.diffusion import LOSS_BINS
from diffbench.engine.metrics import (
    CheckpointRecord,
    EpochRecord,
    FolderSink,
    SampleRecord,
    StartRecord,
    StatusRecord,
    Steps,
    read_jsonl,
)
from diffbench.engine.optimizers import OPTIMIZERS
from diffbench.engine.run import TrainingData
from diffbench.engine.run_config import RunConfig, RunError
from diffbench.engine.training import Trainer

LR = {"adamw": 2e-3, "sgd": 2e-2, "muon": 2e-3, "soap": 2e-3, "schedulefree": 2e-3,
      "prodigy": 1.0}


def toy(preset: Preset, **changes) -> Preset:
    return override(preset, {"model.channels": [8, 16], "model.blocks": 1,
                             "train.batch_size": 4, "train.warmup_epochs": 1,
                             "train.samples_every": 0, "train.sample_steps": 4,
                             "train.sample_count": 2, **changes})


@pytest.fixture(scope="module")
def data(quick_preset, tmp_path_factory) -> TrainingData:
    path = generate_dataset(quick_preset, tmp_path_factory.mktemp("data") / "quick.h5",
                            device=torch.device("cpu"))
    return TrainingData.load(path, quick_preset)


@pytest.fixture
def run_config(device) -> Callable[..., RunConfig]:
    """A run of ``preset`` on the tests' device (`--device`), seed 3, at the test's lr."""
    def make(preset: Preset, optimizer: str = "adamw", **changes) -> RunConfig:
        return RunConfig(**{"preset": preset, "optimizer": optimizer, "lr": LR[optimizer],
                            "weight_decay": 0.01, "device": device, "seed": 3, **changes})
    return make


def steps_of(records) -> list:
    return [s for r in records if isinstance(r, Steps) for s in r.records]


def test_loss_falls_and_every_record_is_there(quick_preset, data, tmp_path, run_config):
    preset = toy(quick_preset, **{"train.epochs": 20, "train.samples_every": 10})
    records = list(Trainer(run_config(preset), data, tmp_path))
    kinds = [type(r) for r in records]
    assert kinds[0] is StartRecord and kinds[-1] is StatusRecord
    assert records[-1].state == "done" and records[-1].step == 40
    assert records[0].total_steps == 40 and records[0].epoch_steps == 2
    assert records[0].provenance["parameters"] > 0

    steps = steps_of(records)
    assert [s.step for s in steps] == list(range(1, 41))
    for s in steps:
        assert s.data_ms >= 0 and s.compute_ms > 0 and s.optimizer_ms > 0
        assert math.isfinite(s.loss) and s.grad_norm > 0
    # linear warm-up over the first epoch (2 steps), then linear decay
    assert [s.lr for s in steps[:3]] == pytest.approx([1e-3, 2e-3, 2e-3 * 38 / 38])
    assert steps[-1].lr == pytest.approx(2e-3 / 38)

    epochs = [r for r in records if isinstance(r, EpochRecord)]
    assert [e.epoch for e in epochs] == list(range(20))
    first, last = epochs[0], epochs[-1]
    assert last.train_loss < 0.8 * first.train_loss, (first, last)
    assert last.fixed_valid_loss < first.fixed_valid_loss
    assert all(e.valid_loss is not None and e.epoch_s > 0 and e.valid_s > 0 for e in epochs)
    bins = len(LOSS_BINS) - 1
    assert all(len(e.fixed_valid_bins) == bins for e in epochs)
    # the bins near t = 1 are nearly pure noise in, noise out: an easier target than t ≈ 0
    assert last.fixed_valid_bins[-1] < last.fixed_valid_bins[0]
    assert last.train_s == pytest.approx(sum(e.epoch_s for e in epochs))

    samples = [r for r in records if isinstance(r, SampleRecord)]
    assert [(s.epoch, s.name) for s in samples] == [(9, "vorticity"), (19, "vorticity"),
                                                    (20, "quality"), (20, "quality-data")]
    assert samples[0].velocity.shape == (2, 5, 2, 16, 16)
    assert samples[0].vorticity.shape == (2, 5, 16, 16)
    assert sum(isinstance(r, CheckpointRecord) for r in records) == 20
    assert (tmp_path / "model.pt").is_file()


def test_folder_sink_writes_metrics(quick_preset, data, tmp_path, run_config):
    preset = toy(quick_preset, **{"train.epochs": 2, "train.samples_every": 2})
    sink = FolderSink(tmp_path)
    records = list(Trainer(run_config(preset), data, tmp_path))
    for record in records:
        sink.write(record)
    assert records[-1].state == "done"
    assert [row["step"] for row in read_jsonl(tmp_path / "steps.jsonl")] == [1, 2, 3, 4]
    assert [row["epoch"] for row in read_jsonl(tmp_path / "epochs.jsonl")] == [0, 1]
    events = [row["kind"] for row in read_jsonl(tmp_path / "events.jsonl")]
    assert events == ["start", "checkpoint", "checkpoint", "status"]
    assert (tmp_path / "samples" / "epoch-0001.npz").is_file()


def test_nan_in_the_data_stops_the_run_as_diverged(quick_preset, data, run_config):
    poisoned = TrainingData(train=data.train.clone(), valid=data.valid)
    poisoned.train[5, 2, 0, 3, 3] = math.nan  # every window of trajectory 5 holds state 2
    preset = toy(quick_preset, **{"train.epochs": 3})
    records = list(Trainer(run_config(preset), poisoned))
    status = records[-1]
    assert status.state == "diverged"
    steps = steps_of(records)
    assert steps[-1].step == status.step and not math.isfinite(steps[-1].loss)
    assert all(math.isfinite(s.loss) for s in steps[:-1])
    assert status.step <= 2  # trajectory 5 is in one of the first epoch's two batches


def test_huge_lr_diverges(quick_preset, data, run_config):
    preset = toy(quick_preset, **{"train.epochs": 30, "train.warmup_epochs": 0})
    config = run_config(preset, "sgd", lr=1e30, weight_decay=0.0)
    status = list(Trainer(config, data))[-1]
    assert status.state == "diverged" and status.step < 60


def test_stop_checkpoints_and_reports_interrupted(quick_preset, data, tmp_path, run_config):
    preset = toy(quick_preset, **{"train.epochs": 4})
    trainer = Trainer(run_config(preset), data, tmp_path)
    records = []
    for record in trainer:
        records.append(record)
        if isinstance(record, EpochRecord) and record.epoch == 0:
            trainer.request_stop()
    assert records[-1].state == "interrupted" and records[-1].step == 2
    state = load_checkpoint(latest_checkpoint(tmp_path / "checkpoints"))
    assert state["step"] == 2 and state["epoch"] == 1


@pytest.mark.parametrize("bad", [{"optimizer": "adam"}, {"schedule": "step"}, {"lr": 0.0},
                                 {"cuda_graph": True, "compile": False},
                                 {"lr": -1.0}, {"weight_decay": -0.1}, {"precision": "fp16"},
                                 {"options": {"betas2": 1}}])
def test_bad_run_settings_name_the_problem(quick_preset, bad):
    with pytest.raises(RunError,
                       match=r"optimizer|schedule|lr|weight_decay|precision|option|compile"):
        RunConfig(**{"preset": quick_preset, "optimizer": "adamw", "lr": 1e-3,
                     "weight_decay": 0.0, **bad})


def test_config_round_trips_through_json(quick_preset, run_config):
    config = run_config(toy(quick_preset), "muon", options={"adam_betas": (0.9, 0.95)})
    again = RunConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.to_dict() == config.to_dict()


def test_a_config_stored_before_quality_existed_resumes_unassessed(quick_preset):
    """Run folders and job rows written before presets had [quality] still load: the run
    resumes as it was asked, without the assessment."""
    stored = RunConfig(preset=quick_preset, optimizer="adamw", lr=1e-3, weight_decay=0.0).to_dict()
    del stored["preset"]["quality"]
    config = RunConfig.from_dict(json.loads(json.dumps(stored)))
    assert not config.preset.quality.enabled
    assert config.preset.model == quick_preset.model and config.lr == 1e-3

def final_parameters(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_stop_after_an_epochs_last_step_resumes_exactly(quick_preset, data, tmp_path, run_config):
    """A stop between an epoch's last step and its end closes the epoch first."""
    preset = toy(quick_preset, **{"train.epochs": 3, "train.batch_size": 3})  # 3 steps/epoch
    whole = Trainer(run_config(preset), data, tmp_path / "whole")
    assert list(whole)[-1].state == "done"

    stopped = Trainer(run_config(preset), data, tmp_path / "stopped", flush_every=1)
    for record in stopped:
        if isinstance(record, Steps) and record.records[-1].step == 3:
            stopped.request_stop()  # the sampler has just handed out epoch 0's last batch
    assert record.state == "interrupted" and (record.epoch, record.step) == (1, 3)
    resumed = Trainer(run_config(preset), data, tmp_path / "stopped", resume=True)
    assert list(resumed)[-1].state == "done" and resumed.step == 9
    for a, b in zip(final_parameters(whole), final_parameters(resumed), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_resume_is_bit_exact(optimizer, quick_preset, data, tmp_path, run_config):
    """Kill a run at a step after a mid-epoch checkpoint, resume it: identical parameters."""
    preset = toy(quick_preset, **{"train.epochs": 3, "train.batch_size": 3})  # 3 steps/epoch
    config = run_config(preset, optimizer)
    whole = Trainer(config, data, tmp_path / "whole")
    whole_records = list(whole)
    assert whole_records[-1].state == "done" and whole.step == 9

    folder = tmp_path / "killed"
    killed = Trainer(config, data, folder, checkpoint_steps=2)
    for record in killed:  # checkpoints at steps 2, 3 (epoch), 4, 6 (epoch), …
        if isinstance(record, Steps) and record.records[-1].step >= 5:
            break  # killed after step 5 (read out at the epoch's end): resume from step 4
    del killed
    resumed = Trainer(config, data, folder, resume=True, checkpoint_steps=2)
    assert resumed.step == 4
    records = list(resumed)
    assert records[0].step == 4 and records[-1].state == "done"
    for a, b in zip(final_parameters(whole), final_parameters(resumed), strict=True):
        assert torch.equal(a, b)
    # the metrics continue as if uninterrupted
    whole_epochs = [r for r in whole_records if isinstance(r, EpochRecord)]
    resumed_epochs = [r for r in records if isinstance(r, EpochRecord)]
    for a, b in zip(whole_epochs[1:], resumed_epochs, strict=True):
        assert (a.train_loss, a.valid_loss, a.fixed_valid_loss, a.fixed_valid_bins) == \
            (b.train_loss, b.valid_loss, b.fixed_valid_loss, b.fixed_valid_bins)


def test_a_checkpoint_resumes_on_another_device_spec_but_not_another_run(
        quick_preset, data, tmp_path, run_config):
    preset = toy(quick_preset, **{"train.epochs": 2})
    stopped = Trainer(run_config(preset), data, tmp_path)
    for record in stopped:
        if isinstance(record, EpochRecord):
            stopped.request_stop()
    assert record.state == "interrupted"
    resumed = Trainer(run_config(preset, device="auto"), data, tmp_path, resume=True)
    assert resumed.step == stopped.step
    with pytest.raises(ValueError, match="another configuration"):
        Trainer(run_config(preset, lr=1e-2), data, tmp_path, resume=True)


def test_checkpoints_every_n_epochs_at_the_end_and_each_record_names_a_written_file(
        quick_preset, data, tmp_path, run_config):
    preset = toy(quick_preset, **{"train.epochs": 5, "train.checkpoint_every": 2})
    checkpoints = []
    for record in Trainer(run_config(preset), data, tmp_path):
        if isinstance(record, CheckpointRecord):
            assert Path(record.path).is_file()  # written before it is reported
            checkpoints.append(record)
    assert [(c.epoch, c.step) for c in checkpoints] == [(2, 4), (4, 8), (5, 10)]
    assert latest_checkpoint(tmp_path / "checkpoints") == Path(checkpoints[-1].path)
    assert all(c.seconds >= 0 and c.write_s > 0 for c in checkpoints)


@pytest.mark.slow
def test_compiled_loss_trains_as_eager_and_a_run_resumes_across_the_switch(
        quick_preset, data, tmp_path, run_config):
    """torch.compile on the CPU (the path CUDA takes by default, here with its CUDA-graph
    mode, which the CPU skips): compile time reported apart, the same losses as eager within
    float reassociation, and a checkpoint of an eager run resumes compiled."""
    preset = toy(quick_preset, **{"train.epochs": 2})
    whole = Trainer(run_config(preset, compile=False), data)  # eager on CUDA too
    eager = list(whole)
    trainer = Trainer(run_config(preset, compile=True, cuda_graph=True), data)
    compiled = list(trainer)
    assert compiled[-1].state == "done"
    start = compiled[0]
    assert start.provenance["compile"] is True and start.provenance["cuda_graph"] is True
    assert start.provenance["compile_s"] > 0
    assert eager[0].provenance["compile"] is False and eager[0].provenance["compile_s"] == 0
    torch.testing.assert_close([s.loss for s in steps_of(compiled)],
                               [s.loss for s in steps_of(eager)], rtol=1e-4, atol=1e-6)

    stopped = Trainer(run_config(preset, compile=False), data, tmp_path)
    for record in stopped:
        if isinstance(record, EpochRecord):
            stopped.request_stop()
    resumed = Trainer(run_config(preset, compile=True), data, tmp_path, resume=True)
    assert resumed.step == 2 and list(resumed)[-1].state == "done"
    for a, b in zip(final_parameters(resumed), final_parameters(whole), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_compilation_is_chosen_where_it_pays():
    from diffbench.engine.backends import compile_pays_off
    from diffbench.engine.config import load_preset
    from diffbench.engine.unet import build_model

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    small, tiny = (build_model(load_preset(name).model) for name in ("small", "tiny"))
    assert compile_pays_off(cuda, tiny, 1)
    assert compile_pays_off(cpu, small, 256 * 7)  # small's 256 epochs of 7 steps
    assert not compile_pays_off(cpu, small, 100)
    assert not compile_pays_off(cpu, tiny, 100 * 4)  # the demo's tiny runs


def test_provenance_records_the_source_commit_and_dirty_flag():
    import subprocess
    from pathlib import Path

    from diffbench.engine.run import git_state

    here = Path(__file__).resolve().parent
    git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=here)
    if git.returncode != 0:
        pytest.skip("not a git checkout")
    status = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True,
                            cwd=here)
    assert git_state() == {"git_commit": git.stdout.strip(),
                           "git_dirty": bool(status.stdout.strip())}
