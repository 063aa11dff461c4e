"""Presets: the paper's numbers, strict validation that names the bad key, overrides; devices."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from diffbench.engine.config import (
    Preset,
    PresetError,
    available_presets,
    dataset_name,
    load_preset,
    override,
)
from diffbench.engine.device import DeviceError, resolve_device


def test_paper_preset_is_the_spec() -> None:
    paper = load_preset("paper")
    data, model, train = paper.data, paper.model, paper.train
    assert (data.size, data.factor, data.resolution) == (256, 4, 64)
    assert (data.trajectories, data.transitions, data.burn_in, data.kept) == (1024, 128, 64, 64)
    assert (data.inner_steps, data.interval, data.dt) == (82, 0.2, 0.2 / 82)
    assert (data.viscosity, data.drag) == (1e-3, 0.1)
    assert (data.forcing_wavenumber, data.forcing_amplitude) == (4, 1.0)
    assert (data.max_velocity, data.peak_wavenumber) == (3.0, 4.0)
    assert data.split_sizes == (819, 102, 103)
    assert (model.channels, model.blocks, model.window, model.embedding) == (
        (96, 192, 384), 3, 5, 64)
    assert (train.epochs, train.batch_size, train.warmup_epochs) == (1024, 32, 5)
    assert (train.grad_clip, train.valid_every) == (1.0, 1)


@pytest.mark.parametrize("name", ["paper", "small", "tiny"])
def test_inner_steps_keep_cfl_half_at_speed_five(name: str) -> None:
    data = load_preset(name).data
    assert data.inner_steps == math.ceil(data.interval / (0.5 * (2 * math.pi / data.size) / 5))


def test_shipped_presets() -> None:
    assert available_presets() == ["demo", "paper", "small", "tiny"]
    tiny, small, demo = load_preset("tiny"), load_preset("small"), load_preset("demo")
    assert (tiny.data.resolution, tiny.data.trajectories, tiny.data.split_sizes) == (
        32, 40, (32, 4, 4))
    assert small.data.resolution == 64 and small.model.channels == (48, 96, 192)
    assert tiny.name == "tiny"
    # the demo: tiny's data and U-Net, trained longer, sampled from t = 0.9 with the exact mean
    assert (demo.data, demo.model) == (tiny.data, tiny.model)
    assert demo.train.epochs * demo.data.split_sizes[0] // demo.train.batch_size == 1500
    assert (demo.quality.t_start, demo.quality.remove_mean) == (0.9, True)
    assert load_preset("paper").quality.sampler() == {
        "steps": 256, "corrections": 1, "tau": 0.5, "t_start": 1.0, "remove_mean": False}


def test_load_by_path_names_preset_after_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(_paper_text())
    preset = load_preset(path)
    assert preset.name == "mine"
    assert preset.data == load_preset("paper").data
    assert load_preset(str(path)) == preset


def test_one_data_set_name_per_recipe(tmp_path: Path) -> None:
    """A shipped preset's own recipe is its name; any other recipe is name + its hash, the
    same however it was asked for; a training-only change keeps the file."""
    tiny = load_preset("tiny")
    assert [dataset_name(load_preset(n)) for n in available_presets()] == available_presets()
    assert dataset_name(override(tiny, {"train.epochs": 3, "optimizers.adamw.lr": 1.0})) \
        == "tiny"
    bigger = dataset_name(override(tiny, {"data.trajectories": 12}))
    assert bigger.startswith("tiny-") and len(bigger) == len("tiny-") + 8
    assert bigger == dataset_name(override(override(tiny, {"data.seed": 5}),
                                           {"data.trajectories": 12, "data.seed": tiny.data.seed}))
    assert dataset_name(override(tiny, {"data.seed": 1})) != bigger
    path = tmp_path / "mine.toml"
    path.write_text(_paper_text())
    mine = dataset_name(load_preset(path))  # a preset file: hashed even with paper's recipe
    assert mine.startswith("mine-") and len(mine) == len("mine-") + 8
    path.write_text(_paper_text().replace("seed = 0", "seed = 7", 1))
    assert dataset_name(load_preset(path)) != mine  # an edited file never meets the old data


def test_to_dict_round_trips_through_json() -> None:
    paper = load_preset("paper")
    table = json.loads(json.dumps(paper.to_dict()))
    assert Preset.from_dict(table) == paper


def test_override_replaces_and_revalidates() -> None:
    paper = load_preset("paper")
    changed = override(paper, {"data.trajectories": 100, "data.seed": 7})
    assert (changed.data.trajectories, changed.data.seed) == (100, 7)
    assert changed.data.split_sizes == (80, 10, 10)
    assert dataclasses.replace(changed.data, trajectories=1024, seed=0) == paper.data
    with pytest.raises(PresetError, match=r"unknown key data\.trajectorys"):
        override(paper, {"data.trajectorys": 10})
    with pytest.raises(PresetError, match=r"data\.seed must be an integer"):
        override(paper, {"data.seed": "7"})
    with pytest.raises(PresetError, match=r"data\.trajectories"):
        override(paper, {"data.trajectories": 0})


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text(_paper_text().replace("trajectories = 1024", "trajectorys = 1024"))
    with pytest.raises(PresetError, match=r"preset 'typo': unknown key data\.trajectorys"):
        load_preset(path)


def test_invalid_toml_is_a_preset_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[data\nsize = ")
    with pytest.raises(PresetError, match="invalid TOML"):
        load_preset(path)


def test_unknown_name_lists_available() -> None:
    with pytest.raises(PresetError,
                       match="unknown preset 'huge'; available: demo, paper, small, tiny"):
        load_preset("huge")
    with pytest.raises(PresetError, match="does not exist"):
        load_preset("nowhere/missing.toml")
    assert issubclass(PresetError, ValueError)


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("data", "size", "256", r"data\.size must be an integer"),
    ("data", "size", 256.0, r"data\.size must be an integer"),
    ("data", "size", True, r"data\.size must be an integer"),
    ("data", "viscosity", "1e-3", r"data\.viscosity must be a number"),
    ("data", "split", 0.8, r"data\.split must be a list"),
    ("data", "trajectories", 0, r"data\.trajectories must be positive"),
    ("data", "chunk", -1, r"data\.chunk must be positive"),
    ("data", "viscosity", 0.0, r"data\.viscosity must be positive"),
    ("data", "drag", -0.1, r"data\.drag must be non-negative"),
    ("data", "factor", 3, r"data\.size \(256\) must be divisible by data\.factor \(3\)"),
    ("data", "burn_in", 128, r"data\.burn_in \(128\) must be in \[0, data\.transitions\)"),
    ("data", "seed", -1, r"data\.seed"),
    ("data", "split", [0.8, 0.1, 0.2], r"data\.split must sum to 1"),
    ("data", "split", [0.9, 0.1], r"data\.split must be three"),
    ("data", "trajectories", 5, r"data\.trajectories \(5\) leaves a split empty"),
    ("model", "channels", [], r"model\.channels"),
    ("model", "window", 4, r"model\.window must be a positive odd"),
    ("model", "window", 65, r"model\.window \(65\) exceeds the 64 kept states"),
    ("train", "epochs", 0, r"train\.epochs must be positive"),
    ("train", "warmup_epochs", 2000, r"train\.warmup_epochs"),
    ("train", "grad_clip", 0, r"train\.grad_clip must be positive"),
])
def test_bad_values_are_rejected_by_key(section: str, key: str, value: object,
                                        message: str) -> None:
    table = load_preset("paper").to_dict()
    table[section][key] = value
    with pytest.raises(PresetError, match=rf"^preset 'paper': {message}"):
        Preset.from_dict(table)


def test_missing_and_unknown_sections_and_keys() -> None:
    table = load_preset("paper").to_dict()
    del table["train"]["epochs"]
    with pytest.raises(PresetError, match=r"missing key train\.epochs"):
        Preset.from_dict(table)
    del table["train"]
    with pytest.raises(PresetError, match=r"missing section \[train\]"):
        Preset.from_dict(table)
    with pytest.raises(PresetError, match=r"unknown section \[optimiser\]"):
        Preset.from_dict({**load_preset("paper").to_dict(), "optimiser": {}})


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match="'cuda:99'"):
        resolve_device("cuda:99")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    assert issubclass(DeviceError, ValueError)


def _paper_text() -> str:
    return (Path(__file__).parents[1] / "presets" / "paper.toml").read_text()
