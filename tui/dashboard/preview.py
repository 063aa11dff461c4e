"""The vorticity preview's pictures: the latest generated window of a run and real
validation states from its data set file (NumPy and h5py; no torch, no Textual).

Generated samples are stored as picture vorticity ``(n, window, H, W)`` (the worker's
`SampleRecord`); the first window is shown. The real row is the first ``window`` states of
validation trajectory 0 of the run's data set, read straight from the HDF5 file (five
states, not the whole split) and mapped with the same `display_vorticity`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffbench.engine.vorticity import display_vorticity, vorticity
from diffbench.storage import queue, records
from diffbench.storage.db import Database
from diffbench.storage.runs import Run
from diffbench.storage.workspace import Workspace

STATES = 5


@dataclass(frozen=True, eq=False)
class Pictures:
    """Display values in [−1, 1] for one run's preview; either row may be missing, with
    the reason in words."""

    run_id: int
    sample_id: int | None
    epoch: int | None
    generated: tuple[np.ndarray, ...]
    real: tuple[np.ndarray, ...]
    real_source: str  # the file, or why there is no real row


def generated_images(db: Database, sample_id: int) -> tuple[int, tuple[np.ndarray, ...]]:
    """(epoch, the first generated window's states as display values)."""
    sample = records.get_sample(db, sample_id)
    array = sample.array()
    window = array.reshape(-1, *array.shape[-3:])[0][:STATES]  # (states, H, W)
    return sample.epoch, tuple(display_vorticity(w) for w in window)


def dataset_path(run: Run, workspace: Workspace) -> Path | None:
    """Where the worker keeps (or would generate) the run's data set, from its resolved
    config (or its preset when it has not started)."""
    from diffbench.engine.config import Preset, PresetError, dataset_name, load_preset

    try:
        preset = (Preset.from_dict(run.config["preset"]) if run.config
                  else load_preset(run.preset))
    except (PresetError, KeyError, TypeError):
        return None
    return workspace.dataset_path(dataset_name(preset))


def real_images(path: Path | None) -> tuple[tuple[np.ndarray, ...], str]:
    """The first states of validation trajectory 0, and the file name (or why not)."""
    import h5py

    if path is None or not path.is_file():
        return (), f"no data set file {path.name if path else ''}".strip()
    try:
        with h5py.File(path, "r") as file:
            states = np.asarray(file["valid"][0, :STATES], dtype=np.float64)  # (T, 2, H, W)
    except (OSError, KeyError, IndexError, ValueError) as error:
        return (), f"{path.name}: unreadable ({type(error).__name__})"
    return tuple(display_vorticity(vorticity(states))), path.name


def load_pictures(db: Database, workspace: Workspace, run_id: int,
                  sample_id: int | None) -> Pictures:
    """The run's preview: its latest sample (if any) and the real validation row."""
    run = queue.get_run(db, run_id)
    epoch, generated = (None, ()) if sample_id is None else generated_images(db, sample_id)
    real, source = real_images(dataset_path(run, workspace))
    return Pictures(run_id=run_id, sample_id=sample_id, epoch=epoch, generated=generated,
                    real=real, real_source=source)
