"""The data set file: Kolmogorov trajectories in HDF5, written so a crash never leaves a lie.

Layout (format 1):

- datasets ``train``, ``valid``, ``test``: float32 ``(n, T, 2, H, W)`` = (trajectory, time,
  [u, v], x, y), stored in HDF5 chunks of one trajectory; split by index, train first.
- dataset ``seeds``: uint64 ``(trajectories,)``, the per-trajectory solver seed of every
  trajectory, all splits in order (train, valid, test).
- attributes: every `DataConfig` field and its derived values, the preset (name and full
  JSON), provenance (diffbench and torch versions, device, compile mode, creation time), and
  ``checksum`` = sha256 over the little-endian float32 bytes of train, valid, test.

Generation writes ``<name>.partial`` beside the destination, flushes and fsyncs after each
chunk of trajectories (recording ``trajectories_done``), and renames it into place only once
the checksum is set. A rerun resumes the partial file when its recipe matches. A ``stop``
callable makes generation end promptly (`GenerationStopped`): it is polled after every solver
transition (a fraction of a second), so the chunk in progress is dropped and the finished ones
stay in the partial file for the next call to resume.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Protocol

import h5py
import numpy as np
import torch
from torch import Tensor

from . import kolmogorov
from .config import DataConfig, Preset, parse_section
from .statistics import FlowStatistics, flow_statistics
from .vocabulary import SPLITS

FORMAT_VERSION = 1
RESUME_PROVENANCE = ("torch_version", "device", "compiled")  # a partial file's must match
REQUIRED_ATTRS = ("format_version", "preset", "preset_name", "checksum", "trajectories_done")

Progress = Callable[[int, int], None]
Stop = Callable[[], bool]  # true once generation should stop (a signal arrived)


class Simulate(Protocol):
    """Trajectories ``(B, kept, 2, H, W)`` for ``data``, one per solver seed."""

    def __call__(self, data: DataConfig, seeds: Sequence[int], device: torch.device, *,
                 compile: bool) -> Tensor: ...


class DatasetError(ValueError):
    """A data set file that is missing, foreign, incomplete, corrupt or of another recipe."""


class GenerationStopped(Exception):
    """`generate_dataset` was asked to stop (its ``stop()`` became true); the message says
    how many trajectories the partial file keeps."""


@dataclass(frozen=True)
class DatasetInfo:
    """What a valid data set file declares, read without loading the arrays."""

    path: Path
    attrs: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]  # split → (n, T, 2, H, W)
    preset: dict[str, Any]


def simulate_trajectories(
    data: DataConfig, seeds: Sequence[int], device: torch.device, *, compile: bool = False,
    poll: Callable[[], None] | None = None,
) -> Tensor:
    """Trajectories ``(B, kept, 2, H, W)``, float32 on the CPU, one per solver seed;
    ``poll()`` after every transition (`kolmogorov.rollout`)."""
    velocity = kolmogorov.initial_velocity(
        len(seeds), data.size, list(seeds), device,
        max_velocity=data.max_velocity, peak_wavenumber=data.peak_wavenumber,
    )
    states = kolmogorov.rollout(
        velocity, data.transitions, data.inner_steps, burn_in=data.burn_in, factor=data.factor,
        viscosity=data.viscosity, drag=data.drag, forcing_wavenumber=data.forcing_wavenumber,
        forcing_amplitude=data.forcing_amplitude, dt=data.dt, compile=compile, poll=poll,
    )
    return states.to(device="cpu", dtype=torch.float32)


def compile_pays_off(data: DataConfig, device: torch.device) -> bool:
    """Whether `torch.compile` repays its compilation (~25 s on 2 CPU cores).

    Measured (benchmarks/datagen.py): on an H100 compiled steps are ~13x faster at
    256²; on 2 CPU cores ~6x at 256², but at tiny's 64² a fresh compilation costs
    more than it saves (27 s against 21 s eager for the whole set).
    """
    return device.type == "cuda" or data.size >= 128


def generate_dataset(
    preset: Preset,
    path: Path,
    *,
    device: torch.device,
    compile: bool = False,
    progress: Progress | None = None,
    simulate: Simulate | None = None,
    stop: Stop | None = None,
) -> Path:
    """Simulate ``preset.data`` into ``path``, resuming an interrupted run of the same recipe.

    A complete file already at ``path`` is returned unchanged if its data config matches,
    and is never overwritten otherwise. ``compile`` runs the solver under `torch.compile`
    (faster for long runs; equal to eager mode only to rounding, so it is recorded and a
    partial file is resumed only in the same mode). ``progress(done, total)`` is called
    after each chunk. Once ``stop()`` is true, `GenerationStopped` is raised within one solver
    transition (the default ``simulate``; a given one is stopped between chunks), keeping the
    finished chunks in ``<path>.partial``.
    """
    path = Path(path)
    data = preset.data
    if path.exists():
        if open_dataset(path).preset["data"] != preset.to_dict()["data"]:
            raise DatasetError(f"{path} holds a data set of another config; "
                               "remove it or choose another path")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    provenance = _provenance(preset, device, compile)
    done = _resumable(partial, preset, provenance)
    seeds = kolmogorov.trajectory_seeds(data.seed, data.trajectories)
    with h5py.File(partial, "a" if done else "w") as file:
        if not done:
            _create(file, preset, provenance, seeds)

        def poll() -> None:
            if stop is not None and stop():
                raise GenerationStopped(
                    f"data generation stopped: {file.attrs['trajectories_done']} of "
                    f"{data.trajectories} trajectories are kept in {partial}; generating "
                    "again resumes there")

        if simulate is None:
            simulate = functools.partial(simulate_trajectories, poll=poll)
        for start in range(done, data.trajectories, data.chunk):
            poll()
            end = min(start + data.chunk, data.trajectories)
            states = simulate(data, seeds[start:end], device, compile=compile).numpy()
            expected = (end - start, data.kept, 2, data.resolution, data.resolution)
            if states.shape != expected:
                raise ValueError(f"simulate returned {states.shape}, expected {expected}")
            _write(file, data, start, states)
            file.attrs["trajectories_done"] = end
            _sync(file)
            if progress is not None:
                progress(end, data.trajectories)
        file.attrs["checksum"] = _checksum(file, poll)
        file.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        _sync(file)
    os.replace(partial, path)
    _sync_directory(path.parent)
    return path


def _provenance(preset: Preset, device: torch.device, compile: bool) -> dict[str, Any]:
    """Provenance attributes; with the data config, what a resumed run must share."""
    label = str(device)
    if device.type == "cuda":
        label += f" ({torch.cuda.get_device_name(device)})"
    return {"preset": json.dumps(preset.to_dict(), sort_keys=True),
            "torch_version": str(torch.__version__), "device": label, "compiled": compile}


def _resumable(partial: Path, preset: Preset, provenance: dict[str, Any]) -> int:
    """Trajectories already in ``partial`` if it was started with the same data config, torch,
    device and compile mode (so the result is bit for bit an uninterrupted run's); else
    remove it."""
    if not partial.exists():
        return 0
    try:
        with h5py.File(partial, "r") as file:
            attrs = dict(file.attrs)
        same = (attrs["format_version"] == FORMAT_VERSION
                and json.loads(attrs["preset"])["data"] == preset.to_dict()["data"]
                and all(attrs[key] == provenance[key] for key in RESUME_PROVENANCE))
        done = int(attrs["trajectories_done"]) if same else 0
    except (OSError, KeyError, ValueError):  # a crash mid-write can leave an unreadable file
        done = 0
    if done == 0:
        partial.unlink()
    return done


def _create(
    file: h5py.File, preset: Preset, provenance: dict[str, Any], seeds: list[int],
) -> None:
    """Empty split datasets, the seeds and every attribute but the checksum."""
    data = preset.data
    frame = (data.kept, 2, data.resolution, data.resolution)
    for split, n in zip(SPLITS, data.split_sizes, strict=True):
        file.create_dataset(split, shape=(n, *frame), dtype="<f4", chunks=(1, *frame))
    file.create_dataset("seeds", data=np.array(seeds, dtype=np.uint64))
    for key, value in dataclasses.asdict(data).items():
        file.attrs[key] = np.asarray(value) if isinstance(value, tuple) else value
    file.attrs.update({
        "resolution": data.resolution, "kept": data.kept, "dt": data.dt,
        "split_sizes": np.asarray(data.split_sizes),
        "preset_name": preset.name, **provenance,
        "diffbench_version": version("diffbench"), "format_version": FORMAT_VERSION,
        "trajectories_done": 0,
    })


def _write(file: h5py.File, data: DataConfig, start: int, states: np.ndarray) -> None:
    """Put trajectories ``start …`` (global indices) into the splits they belong to."""
    offset = 0
    for split, n in zip(SPLITS, data.split_sizes, strict=True):
        lo, hi = max(start, offset), min(start + len(states), offset + n)
        if lo < hi:
            file[split][lo - offset:hi - offset] = states[lo - start:hi - start]
        offset += n


def _checksum(file: h5py.File, poll: Callable[[], None] | None = None) -> str:
    """sha256 of train, valid, test as little-endian float32, one trajectory at a time
    (``poll()`` before each)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for trajectory in file[split].iter_chunks():
            if poll is not None:
                poll()
            digest.update(np.ascontiguousarray(file[split][trajectory], dtype="<f4").tobytes())
    return digest.hexdigest()


def _sync(file: h5py.File) -> None:
    file.flush()
    os.fsync(file.id.get_vfd_handle())


def _sync_directory(directory: Path) -> None:
    """Make the rename durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _reading(path: Path) -> Iterator[h5py.File]:
    """Open for reading; HDF5's low-level failures become one `DatasetError` line."""
    try:
        with h5py.File(path, "r") as file:
            yield file
    except OSError as error:
        raise DatasetError(f"{path}: unreadable HDF5 (truncated or corrupt): {error}") from None


def open_dataset(path: Path) -> DatasetInfo:
    """Validate that ``path`` is a complete diffbench data set and describe it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not an HDF5 file")
    with _reading(path) as file:
        attrs = {key: _plain(value) for key, value in file.attrs.items()}
        shapes = {name: file[name].shape for name in (*SPLITS, "seeds") if name in file}
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    missing += [name for name in (*SPLITS, "seeds") if name not in shapes]
    if missing:
        raise DatasetError(f"{path}: not a diffbench data set (missing {', '.join(missing)})")
    if attrs["format_version"] != FORMAT_VERSION:
        raise DatasetError(f"{path}: data set format {attrs['format_version']}, "
                           f"this diffbench reads format {FORMAT_VERSION}")
    try:
        preset = json.loads(attrs["preset"])
        data = parse_section(DataConfig, preset.get("data"))
    except (ValueError, TypeError, AttributeError) as error:
        raise DatasetError(f"{path}: unreadable preset attribute: {error}") from None
    frame = (data.kept, 2, data.resolution, data.resolution)
    expected = {split: (n, *frame) for split, n in zip(SPLITS, data.split_sizes, strict=True)}
    expected["seeds"] = (data.trajectories,)
    if shapes != expected or attrs["trajectories_done"] != data.trajectories:
        raise DatasetError(f"{path}: arrays {shapes} disagree with its config {expected}")
    return DatasetInfo(path=path, attrs=attrs, shapes=shapes, preset=preset)


def _plain(value: Any) -> Any:
    """HDF5 attribute values as plain Python (numpy scalars → numbers, arrays → lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def verify_checksum(path: Path) -> None:
    """Recompute the sha256 of the arrays; raise `DatasetError` if it differs from the stored."""
    info = open_dataset(path)
    with _reading(path) as file:
        actual = _checksum(file)
    if actual != info.attrs["checksum"]:
        raise DatasetError(f"{path}: checksum mismatch (stored {info.attrs['checksum'][:12]}…, "
                           f"computed {actual[:12]}…): the data were modified or corrupted")


def load_split(path: Path, split: str, index: int | None = None) -> np.ndarray:
    """One split as float32 ``(n, T, 2, H, W)``, or only its trajectory ``index``."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    open_dataset(path)
    with _reading(path) as file:
        return file[split][...] if index is None else file[split][index]


def split_statistics(path: Path, split: str) -> FlowStatistics:
    """`flow_statistics` of a split, read a few trajectories at a time from the file."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    open_dataset(path)
    with _reading(path) as file:
        return flow_statistics(file[split])
