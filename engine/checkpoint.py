"""Resume checkpoints: complete, atomic, with a pointer to the latest.

Like k-diffusion's ``save()``, a checkpoint holds everything a run needs to continue as if it
had never stopped: config, model, optimizer (ScheduleFree in train mode), the schedule's
position (epoch and step), every RNG (torch CPU/CUDA, NumPy, Python, the window sampler's and
the trainer's own generators), the epoch's partial sums and the elapsed times.

Writing is atomic: ``torch.save`` to ``<name>.tmp`` in the same folder, fsync, rename, fsync
the folder; then ``latest.json`` (written the same way) names the new file, and older
checkpoints beyond ``keep`` are removed. A kill at any moment leaves the previous pointer and
the file it names intact.

`CheckpointWriter` takes the write off the training thread: the trainer pays only for a copy
of its state in host memory (a device-to-host copy on CUDA, a clone on the CPU, since training
goes on changing the tensors); a background thread writes it, one checkpoint at a time, and
the next one or the end of the run waits for it. A process that exits normally waits for the
write too (the thread is not a daemon); one that is killed keeps the previous checkpoint.
"""

from __future__ import annotations

import json
import os
import pickle
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
POINTER = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint folder without a usable checkpoint, or one of another run."""


def _sync_directory(directory: Path) -> None:
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, write) -> None:
    """Call ``write(file)`` on ``<path>.tmp``, fsync, rename onto ``path``, fsync the folder."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_directory(path.parent)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}.pt"


def save_checkpoint(folder: Path, state: dict[str, Any], *, keep: int = 1) -> Path:
    """Write ``state`` (which must hold ``step`` and ``epoch``) atomically; point at it.

    Keeps the newest ``keep`` checkpoints (at least the one just written).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    step, epoch = int(state["step"]), int(state["epoch"])
    path = folder / checkpoint_name(step)
    _write_atomic(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))
    pointer = {"checkpoint": path.name, "step": step, "epoch": epoch}
    _write_atomic(folder / POINTER, lambda f: f.write(json.dumps(pointer).encode() + b"\n"))
    for old in sorted(folder.glob("step-*.pt"))[:-max(keep, 1)]:
        if old != path:
            old.unlink(missing_ok=True)
    return path


def save_weights(path: Path, weights: dict[str, Any]) -> Path:
    """Model weights alone (``torch.save`` of a state dict), written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, lambda f: torch.save(weights, f))
    return path


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``latest.json`` names, or None when the folder has none yet."""
    pointer = Path(folder) / POINTER
    if not pointer.exists():
        return None
    try:
        name = json.loads(pointer.read_text())["checkpoint"]
    except (ValueError, KeyError) as error:
        raise CheckpointError(f"{pointer}: unreadable pointer ({error})") from None
    path = Path(folder) / name
    if not path.exists():
        raise CheckpointError(f"{pointer} names {name}, which does not exist")
    return path


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's state as `save_checkpoint` received it (tensors on ``map_location``)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    version = state.pop("format_version", None) if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r}, expected "
                              f"{FORMAT_VERSION}")
    return state


def host_copy(value: Any) -> Any:
    """``value`` with every tensor copied to host memory (nested dicts, lists, tuples)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: host_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(host_copy(v) for v in value)
    return value


@dataclass(frozen=True)
class Written:
    """A checkpoint on disk: where, of which position, what it cost the thread that submitted
    it (the wait for the previous write and the host copy) and how long the write took."""

    path: Path
    step: int
    epoch: int
    blocking_s: float
    write_s: float


class CheckpointWriter:
    """`save_checkpoint` on a background thread, one write at a time, in submission order."""

    def __init__(self, folder: Path, *, keep: int = 1) -> None:
        self.folder = Path(folder)
        self.keep = keep
        self._thread: threading.Thread | None = None
        self._written: list[Written] = []
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def submit(self, state: dict[str, Any]) -> None:
        """Copy ``state`` to host memory now and write it in the background (after the
        previous write has finished, so at most one copy is waiting)."""
        start = time.perf_counter()
        self.wait()
        snapshot = host_copy(state)
        self._thread = threading.Thread(target=self._write,
                                        args=(snapshot, time.perf_counter() - start),
                                        name="checkpoint-writer")
        self._thread.start()

    def _write(self, state: dict[str, Any], blocking_s: float) -> None:
        start = time.perf_counter()
        try:
            path = save_checkpoint(self.folder, state, keep=self.keep)
        except BaseException as error:  # handed to the training thread by `wait`
            self._error = error
            return
        done = Written(path, int(state["step"]), int(state["epoch"]), blocking_s,
                       time.perf_counter() - start)
        with self._lock:
            self._written.append(done)

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def written(self) -> list[Written]:
        """The checkpoints finished since the last call, oldest first."""
        with self._lock:
            done, self._written = self._written, []
        return done
