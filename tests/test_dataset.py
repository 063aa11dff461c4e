"""The data set file: round trip with the real solver, provenance, corruption, resumption."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import Tensor

from diffbench.engine.config import DataConfig, Preset, override
from diffbench.engine.dataset import (
    SPLITS,
    DatasetError,
    generate_dataset,
    load_split,
    open_dataset,
    simulate_trajectories,
    verify_checksum,
)
from diffbench.engine.kolmogorov import trajectory_seeds

CPU = torch.device("cpu")


class Interrupt(Exception):
    """Stands in for Ctrl-C or a lost machine."""


@pytest.fixture(scope="session")
def reference(quick_preset: Preset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted generation, shared read-only by the tests."""
    return generate_dataset(quick_preset, tmp_path_factory.mktemp("ref") / "quick.h5",
                            device=CPU)


@pytest.fixture
def copy(reference: Path, tmp_path: Path) -> Path:
    """A private copy of the reference file, for tests that damage it."""
    return Path(shutil.copy(reference, tmp_path / "copy.h5"))


def test_round_trip_is_the_solver_output(reference: Path, quick_preset: Preset) -> None:
    data = quick_preset.data
    seeds = trajectory_seeds(data.seed, data.trajectories)
    chunks = [seeds[i:i + data.chunk] for i in range(0, len(seeds), data.chunk)]
    expected = np.concatenate([simulate_trajectories(data, c, CPU).numpy() for c in chunks])
    stored = np.concatenate([load_split(reference, split) for split in SPLITS])
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, expected)
    assert [len(load_split(reference, split)) for split in SPLITS] == list(data.split_sizes)
    with h5py.File(reference) as file:
        assert file["seeds"][:].tolist() == seeds
        assert file["train"].chunks == (1, data.kept, 2, data.resolution, data.resolution)


def test_attributes_record_config_and_provenance(reference: Path, quick_preset: Preset) -> None:
    info = open_dataset(reference)
    data = quick_preset.data
    assert info.shapes["train"] == (8, 5, 2, 16, 16)
    assert info.preset == quick_preset.to_dict()
    assert json.loads(info.attrs["preset"]) == quick_preset.to_dict()
    for key, value in quick_preset.to_dict()["data"].items():
        assert info.attrs[key] == value, key
    assert info.attrs["dt"] == data.dt and info.attrs["resolution"] == 16
    assert info.attrs["split_sizes"] == [8, 1, 1]
    assert info.attrs["preset_name"] == "tiny" and info.attrs["seed"] == 0
    assert info.attrs["device"] == "cpu" and info.attrs["torch_version"] == torch.__version__
    assert info.attrs["compiled"] is False
    assert info.attrs["diffbench_version"] and info.attrs["created"]
    assert info.attrs["format_version"] == 1 and info.attrs["trajectories_done"] == 10
    assert len(info.attrs["checksum"]) == 64
    verify_checksum(reference)


def test_flipped_value_fails_the_checksum(copy: Path) -> None:
    with h5py.File(copy, "r+") as file:
        file["test"][0, 2, 1, 3, 4] += 1e-3
    open_dataset(copy)  # still well formed
    with pytest.raises(DatasetError, match="checksum mismatch"):
        verify_checksum(copy)


def test_damaged_and_foreign_files_are_rejected(copy: Path, tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not a data set\n")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        open_dataset(text)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as file:
        file["x"] = np.zeros(3)
    with pytest.raises(DatasetError, match="not a diffbench data set"):
        load_split(foreign, "train")
    with open(copy, "r+b") as file:
        file.truncate(copy.stat().st_size // 2)
    with pytest.raises(DatasetError, match="truncated or corrupt"):
        open_dataset(copy)


def test_a_file_is_valid_by_its_data_recipe_alone(copy: Path) -> None:
    """Files keep opening when later versions add preset sections outside [data]."""
    with h5py.File(copy, "r+") as file:
        preset = json.loads(file.attrs["preset"])
        file.attrs["preset"] = json.dumps({"name": preset["name"], "data": preset["data"]})
    assert open_dataset(copy).shapes["train"][0] == 8
    with h5py.File(copy, "r+") as file:
        file.attrs["preset"] = json.dumps({"name": "x", "data": {"size": 32}})
    with pytest.raises(DatasetError, match=r"missing key data\.factor"):
        open_dataset(copy)


def test_unknown_split(reference: Path) -> None:
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        load_split(reference, "training")


def test_interrupted_run_resumes_to_the_same_bits(
    quick_preset: Preset, reference: Path, tmp_path: Path,
) -> None:
    path = tmp_path / "resumed.h5"
    partial = tmp_path / "resumed.h5.partial"

    def stop_after_first_chunk(done: int, total: int) -> None:
        raise Interrupt

    with pytest.raises(Interrupt):
        generate_dataset(quick_preset, path, device=CPU, progress=stop_after_first_chunk)
    assert not path.exists()
    with h5py.File(partial) as file:
        assert file.attrs["trajectories_done"] == 3 and "checksum" not in file.attrs

    simulated: list[int] = []

    def counting(data: DataConfig, seeds: Sequence[int], device: torch.device, *,
                 compile: bool) -> Tensor:
        simulated.extend(seeds)
        return simulate_trajectories(data, seeds, device, compile=compile)

    calls: list[tuple[int, int]] = []
    generate_dataset(quick_preset, path, device=CPU, simulate=counting,
                     progress=lambda done, total: calls.append((done, total)))
    assert simulated == trajectory_seeds(0, 10)[3:]
    assert calls == [(6, 10), (9, 10), (10, 10)]
    assert not partial.exists()
    for split in SPLITS:
        np.testing.assert_array_equal(load_split(path, split), load_split(reference, split))
    assert open_dataset(path).attrs["checksum"] == open_dataset(reference).attrs["checksum"]


@pytest.mark.parametrize(("changes", "compile"), [({"data.seed": 1}, False), ({}, True)])
def test_partial_of_another_recipe_is_restarted(
    quick_preset: Preset, reference: Path, tmp_path: Path, changes: dict[str, int],
    compile: bool,
) -> None:
    path = tmp_path / "restarted.h5"
    with pytest.raises(Interrupt):
        generate_dataset(override(quick_preset, changes), path, device=CPU, compile=compile,
                         simulate=_eager, progress=lambda done, total: _raise(Interrupt()))
    simulated: list[int] = []

    def counting(data: DataConfig, seeds: Sequence[int], device: torch.device, *,
                 compile: bool) -> Tensor:
        simulated.extend(seeds)
        return simulate_trajectories(data, seeds, device, compile=compile)

    generate_dataset(quick_preset, path, device=CPU, simulate=counting)
    assert len(simulated) == 10
    assert open_dataset(path).attrs["checksum"] == open_dataset(reference).attrs["checksum"]


def test_existing_file_is_kept_or_refused(quick_preset: Preset, copy: Path) -> None:
    before = copy.stat().st_mtime_ns

    def never(data: DataConfig, seeds: Sequence[int], device: torch.device, *,
              compile: bool) -> Tensor:
        raise AssertionError("a complete matching file must not be regenerated")

    assert generate_dataset(quick_preset, copy, device=CPU, simulate=never) == copy
    assert copy.stat().st_mtime_ns == before
    other = override(quick_preset, {"data.seed": 1})
    with pytest.raises(DatasetError, match="another config"):
        generate_dataset(other, copy, device=CPU, simulate=never)
    assert copy.stat().st_mtime_ns == before


def test_simulator_of_wrong_shape_is_caught(quick_preset: Preset, tmp_path: Path) -> None:
    def wrong(data: DataConfig, seeds: Sequence[int], device: torch.device, *,
              compile: bool) -> Tensor:
        return torch.zeros(len(seeds), data.kept, 2, data.size, data.size)

    with pytest.raises(ValueError, match="simulate returned"):
        generate_dataset(quick_preset, tmp_path / "wrong.h5", device=CPU, simulate=wrong)
    assert not (tmp_path / "wrong.h5").exists()


def _eager(data: DataConfig, seeds: Sequence[int], device: torch.device, *,
           compile: bool) -> Tensor:
    """The solver, ignoring the compile flag (compiling takes ~20 s on a CPU)."""
    return simulate_trajectories(data, seeds, device)


def _raise(error: Exception) -> None:
    raise error
