"""Resume checkpoints: complete, atomic, with a pointer to the latest.

Like k-diffusion's ``save()``, a checkpoint holds everything a run needs to continue as if it
had never stopped: config, model, optimizer (ScheduleFree in train mode), the schedule's
position (epoch and step), every RNG (torch CPU/CUDA, NumPy, Python, the window sampler's and
the trainer's own generators), the epoch's partial sums and the elapsed times.

Writing is atomic: ``torch.save`` to ``<name>.tmp`` in the same folder, fsync, rename, fsync
the folder; then ``latest.json`` (written the same way) names the new file, and older
checkpoints beyond ``keep`` are removed (and any of a later step, left by a run that resumed
from an earlier one). A kill at any moment leaves the previous pointer and the file it names
intact; the trainer keeps two, so a latest file damaged afterwards still has one before it.

Loading verifies the file: the CRC-32 of every record of the archive ``torch.save`` writes
(`zipfile`; ``torch.load`` itself reads flipped bytes without complaint), then unpickling.
`resume_checkpoint` takes the newest checkpoint that passes: the one ``latest.json`` names,
else the newest before it, saying which it passed over and why; none usable is an error
(docs/FAULTS.md).

`CheckpointWriter` takes the write off the training thread: the trainer pays only for a copy
of its state in host memory (a device-to-host copy on CUDA, a clone on the CPU, since training
goes on changing the tensors); a background thread writes it, one checkpoint at a time, and
the next one or the end of the run waits for it. A process that exits normally waits for the
write too (the thread is not a daemon); one that is killed keeps the previous checkpoint. A
write that fails (a full disk) leaves the previous checkpoint and pointer as they were and
reaches the training thread as `CheckpointWriteError`, naming the step still kept.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

FORMAT_VERSION = 1
POINTER = "latest.json"


class CheckpointError(ValueError):
    """A checkpoint folder without a usable checkpoint, or one of another run."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. no space left on device); the message says
    which and the step of the previous checkpoint, which is kept. ``errno`` is the cause's."""


def _sync_directory(directory: Path) -> None:
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Remembering:
    """A file whose ``write`` remembers the `OSError` it raised: `torch.save` reports a failed
    write as a RuntimeError without the errno (a full disk reads "unexpected pos …")."""

    def __init__(self, file: Any) -> None:
        self.file, self.error = file, None

    def write(self, data: bytes) -> int:
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self) -> None:
        self.file.flush()


def _write_atomic(path: Path, write) -> None:
    """Call ``write(file)`` on ``<path>.tmp``, fsync, rename onto ``path``, fsync the folder;
    a failed write raises its own `OSError` (ENOSPC, EIO, …) and leaves no temporary file."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        with open(temporary, "wb") as file:
            remembering = _Remembering(file)
            try:
                write(remembering)
            except Exception as error:
                if remembering.error is not None:
                    raise remembering.error from error
                raise
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
    older = sorted(p for p in folder.glob("step-*.pt") if p.name < path.name)
    later = [p for p in folder.glob("step-*.pt") if p.name > path.name]
    for old in older[:len(older) - (max(keep, 1) - 1)] + later:
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


def latest_step(folder: Path) -> int | None:
    """The step ``latest.json`` names, or None (no pointer, or an unreadable one)."""
    try:
        return int(json.loads((Path(folder) / POINTER).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def verify_checkpoint(path: Path) -> None:
    """Raise `CheckpointError` unless every record of the archive at ``path`` reads back
    with its CRC-32 (a truncated, overwritten or bit-flipped file)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, EOFError, ValueError, struct.error, zipfile.BadZipFile) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: not a readable checkpoint (record {bad} fails its "
                              "CRC-32: the file was damaged after it was written)")


def load_checkpoint(path: Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """A checkpoint's state as `save_checkpoint` received it (tensors on ``map_location``),
    once `verify_checkpoint` passes."""
    verify_checkpoint(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({error})") from None
    version = state.pop("format_version", None) if isinstance(state, dict) else None
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version!r}, expected "
                              f"{FORMAT_VERSION}")
    return state


@dataclass(frozen=True)
class Resumed:
    """The checkpoint a run resumes from, and why each newer one was passed over."""

    path: Path
    state: dict[str, Any]
    skipped: tuple[str, ...]


def resume_checkpoint(folder: Path, map_location: torch.device | str = "cpu"
                      ) -> Resumed | None:
    """The newest usable checkpoint of ``folder``: the one ``latest.json`` names, or, when it
    (or the pointer) fails to load or verify, the newest earlier one that passes. None when
    the folder holds no checkpoint; `CheckpointError` listing every failure when it holds
    some and none passes (nothing is removed: the files stay for a look)."""
    folder = Path(folder)
    files = sorted(folder.glob("step-*.pt"), reverse=True)
    skipped: list[str] = []
    try:
        named = latest_checkpoint(folder)
    except CheckpointError as error:
        named = None
        skipped.append(str(error))
    candidates = files if named is None else [named, *(f for f in files if f.name < named.name)]
    for path in candidates:
        try:
            return Resumed(path, load_checkpoint(path, map_location), tuple(skipped))
        except CheckpointError as error:
            skipped.append(str(error))
    if skipped:
        raise CheckpointError(f"{folder}: no usable checkpoint ({'; '.join(skipped)}); "
                              "remove the folder's checkpoints to start the run again")
    return None


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
        except OSError as error:  # e.g. a full disk: the previous checkpoint is intact
            self._error = self._write_error(error, int(state["step"]))
            return
        except BaseException as error:  # handed to the training thread by `wait`
            self._error = error
            return
        done = Written(path, int(state["step"]), int(state["epoch"]), blocking_s,
                       time.perf_counter() - start)
        with self._lock:
            self._written.append(done)

    def _write_error(self, error: OSError, step: int) -> CheckpointWriteError:
        reason = os.strerror(error.errno).lower() if error.errno else str(error)
        kept = latest_step(self.folder)
        previous = ("no earlier checkpoint" if kept is None
                    else f"previous checkpoint at step {kept} kept")
        failure = CheckpointWriteError(f"{reason} while writing checkpoint "
                                       f"{checkpoint_name(step)} in {self.folder} ({previous})")
        failure.errno, failure.__cause__ = error.errno, error
        return failure

    def wait(self) -> None:
        """Block until the write in flight (if any) is on disk; re-raise its error."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.check()

    def check(self) -> None:
        """Re-raise (once) the error of a write that has already failed; never blocks."""
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def written(self) -> list[Written]:
        """The checkpoints finished since the last call, oldest first."""
        with self._lock:
            done, self._written = self._written, []
        return done
