"""Checkpoints: atomic writes, the latest pointer, pruning, refusals; RNG capture; metrics I/O."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

from diffbench.engine import checkpoint, rng
from diffbench.engine.checkpoint import (
    CheckpointError,
    CheckpointWriter,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from diffbench.engine.metrics import (
    FolderSink,
    StartRecord,
    StatusRecord,
    StepRecord,
    Steps,
    read_jsonl,
    to_json,
)


def state(step: int) -> dict:
    return {"step": step, "epoch": step // 3, "weights": torch.full((3,), float(step)),
            "nested": {"list": [1, 2.5], "text": "x"}}


def test_save_points_at_the_latest_and_keeps_only_the_newest(tmp_path):
    assert latest_checkpoint(tmp_path) is None
    for step in (3, 6, 9):
        path = save_checkpoint(tmp_path, state(step), keep=2)
    assert latest_checkpoint(tmp_path) == path == tmp_path / "step-00000009.pt"
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == \
        ["step-00000006.pt", "step-00000009.pt"]
    assert json.loads((tmp_path / "latest.json").read_text()) == \
        {"checkpoint": "step-00000009.pt", "step": 9, "epoch": 3}
    loaded = load_checkpoint(path)
    assert loaded["step"] == 9 and torch.equal(loaded["weights"], torch.full((3,), 9.0))
    assert loaded["nested"] == {"list": [1, 2.5], "text": "x"}
    assert not list(tmp_path.glob("*.tmp"))


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, state(3))

    def crash(obj, file):
        file.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, state(6))
    assert latest_checkpoint(tmp_path) == tmp_path / "step-00000003.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step-00000003.pt"]


def test_unreadable_checkpoints_and_pointers_are_refused(tmp_path):
    (tmp_path / "latest.json").write_text("{")
    with pytest.raises(CheckpointError, match="unreadable pointer"):
        latest_checkpoint(tmp_path)
    (tmp_path / "latest.json").write_text('{"checkpoint": "step-00000001.pt"}')
    with pytest.raises(CheckpointError, match="does not exist"):
        latest_checkpoint(tmp_path)
    (tmp_path / "step-00000001.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "step-00000001.pt")


def test_global_rng_state_round_trips_through_a_checkpoint(tmp_path):
    rng.seed_globals(7)
    saved = rng.global_state()
    path = save_checkpoint(tmp_path, {"step": 1, "epoch": 0, "rng": saved})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    rng.set_global_state(load_checkpoint(path)["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_derived_seeds_are_stable_and_distinct():
    assert rng.derive_seed(0, "noise") == rng.derive_seed(0, "noise")
    assert len({rng.derive_seed(s, k) for s in (0, 1) for k in ("noise", "model")}) == 4
    assert 0 <= rng.derive_seed(2**62, "x") < 2**63


def test_non_finite_metrics_survive_json_lines(tmp_path):
    record = StepRecord(step=1, epoch=0, loss=math.nan, lr=1e-3, grad_norm=math.inf,
                        data_ms=0.1, compute_ms=1.0, optimizer_ms=0.5)
    json.loads(to_json(record))  # strict JSON
    sink = FolderSink(tmp_path)
    sink.write(Steps((record,)))
    (row,) = read_jsonl(tmp_path / "steps.jsonl")
    assert math.isnan(row["loss"]) and row["grad_norm"] == math.inf


def test_folder_sink_drops_rows_a_killed_run_wrote_after_its_checkpoint(tmp_path):
    sink = FolderSink(tmp_path)
    rows = [StepRecord(s, 0, 1.0, 1e-3, 1.0, 0, 0, 0) for s in range(1, 6)]
    sink.write(Steps(tuple(rows)))
    sink.write(StartRecord(step=3, epoch=0, total_steps=10, epoch_steps=5, config={},
                           provenance={}))
    sink.write(Steps(tuple(StepRecord(s, 0, 2.0, 1e-3, 1.0, 0, 0, 0) for s in (4, 5))))
    sink.write(StatusRecord("done", 1, 5))
    steps = read_jsonl(tmp_path / "steps.jsonl")
    assert [(r["step"], r["loss"]) for r in steps] == [(1, 1.0), (2, 1.0), (3, 1.0), (4, 2.0),
                                                        (5, 2.0)]
    assert [r["kind"] for r in read_jsonl(tmp_path / "events.jsonl")] == ["start", "status"]


def test_the_writer_copies_the_state_before_training_changes_it(tmp_path):
    weights = torch.zeros(3)
    writer = CheckpointWriter(tmp_path)
    writer.submit({"step": 1, "epoch": 0, "weights": weights})
    weights += 1  # the next optimizer step, in place, while the write may still run
    writer.wait()
    (done,) = writer.written()
    assert (done.path, done.step, done.epoch) == (latest_checkpoint(tmp_path), 1, 0)
    assert done.write_s > 0 and done.blocking_s > 0
    assert torch.equal(load_checkpoint(done.path)["weights"], torch.zeros(3))
    assert writer.written() == []


def test_the_writer_writes_in_order_and_the_pointer_names_the_newest(tmp_path):
    writer = CheckpointWriter(tmp_path)
    for step in (1, 2, 3):
        writer.submit({"step": step, "epoch": 0, "weights": torch.full((4,), float(step))})
    writer.wait()
    assert [d.step for d in writer.written()] == [1, 2, 3]
    assert [p.name for p in tmp_path.glob("step-*.pt")] == ["step-00000003.pt"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["weights"][0] == 3


def test_a_failed_background_write_raises_in_the_training_thread(tmp_path):
    (tmp_path / "taken").write_text("a file where the checkpoint folder should be")
    writer = CheckpointWriter(tmp_path / "taken")
    writer.submit({"step": 1, "epoch": 0})
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # raised once
    assert writer.written() == []
