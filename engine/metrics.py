"""What a training run reports: small frozen records, and the sink interface that takes them.

The trainer *yields* records (sda's ``loop()`` yields its losses); whoever drives it decides
where they go: a `FolderSink` (JSON lines in a run folder), the job database of a worker, a
live display. The engine never imports storage or tui.

Per-step records travel in batches (`Steps`): on CUDA the step timings come from events read
a batch at a time, so one record per step would force a host sync per step.

Non-finite numbers are benchmark data (a diverged run), so JSON lines keep them as the
strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``; `read_jsonl` turns them back into floats.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from diffbench.engine import strict_json

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class StepRecord:
    """One optimizer step. ``lr`` is the first group's; times in milliseconds.

    ``compute_ms`` is forward + loss + backward + gradient norm and clipping;
    ``optimizer_ms`` is setting the lr and ``optimizer.step()``.
    """

    step: int  # 1-based: the number of steps taken once this one is done
    epoch: int  # 0-based epoch the step belongs to
    loss: float
    lr: float
    grad_norm: float  # before clipping
    data_ms: float
    compute_ms: float
    optimizer_ms: float


@dataclass(frozen=True)
class Steps:
    """A batch of consecutive `StepRecord`s (what a sink receives per flush)."""

    records: tuple[StepRecord, ...]


@dataclass(frozen=True)
class EpochRecord:
    """The end of an epoch. Validation losses are None on epochs without validation.

    ``train_s`` is the run's cumulative training time (steps only, validation and sampling
    excluded); ``epoch_s``, ``valid_s`` and ``sample_s`` are this epoch's.
    """

    epoch: int  # 0-based
    step: int
    train_loss: float  # mean over the epoch's steps
    valid_loss: float | None  # stochastic (fresh t, ε each time)
    fixed_valid_loss: float | None  # fixed t and ε per validation sample, comparable across runs
    epoch_s: float
    valid_s: float
    sample_s: float
    train_s: float
    # the fixed-noise loss per t-bin of `diffusion.LOSS_BINS` (same windows and ε in each bin)
    fixed_valid_bins: tuple[float, ...] | None = None


@dataclass(frozen=True, eq=False)
class SampleRecord:
    """States after ``epoch``: velocity ``(n, states, 2, H, W)`` and picture vorticity
    ``(n, states, H, W)`` (`engine.vorticity.vorticity`), float32 NumPy.

    ``name`` says which: ``vorticity``, a preview's generated windows; ``quality``, states of
    the trajectories the quality phase scored; ``quality-data``, the same states of the test
    trajectories they were scored against.
    """

    epoch: int
    step: int
    velocity: np.ndarray
    vorticity: np.ndarray
    seconds: float
    name: str = "vorticity"


@dataclass(frozen=True)
class CheckpointRecord:
    """A resume checkpoint was written (atomically) at ``path``: ``seconds`` is what it cost
    the training thread (the copy of the state), ``write_s`` the write in the background."""

    epoch: int  # epochs completed
    step: int
    path: str
    seconds: float
    write_s: float = 0.0


@dataclass(frozen=True)
class QualityRecord:
    """Sample quality of the finished run (engine/quality.py): ``scores`` is
    `QualityScores.to_dict()`, its ``seconds`` the time of the assessment, which training
    time leaves out."""

    epoch: int  # epochs completed
    step: int
    scores: dict[str, Any]


@dataclass(frozen=True)
class StartRecord:
    """The run begins (or resumes at ``step`` > 0): resolved config and provenance."""

    step: int
    epoch: int
    total_steps: int
    epoch_steps: int
    config: dict[str, Any]
    provenance: dict[str, Any]


@dataclass(frozen=True)
class StatusRecord:
    """The last record of a run: ``done``, ``diverged`` (at ``step``) or ``interrupted``."""

    state: str
    epoch: int
    step: int
    message: str = ""


Record = (StartRecord | Steps | EpochRecord | SampleRecord | CheckpointRecord | QualityRecord
          | StatusRecord)


class Sink(Protocol):
    """Takes records as the trainer yields them."""

    def write(self, record: Record) -> None: ...


# ----------------------------------------------------------------------------- JSON lines


def to_json(record: StepRecord | EpochRecord | CheckpointRecord | StartRecord | QualityRecord
            | StatusRecord) -> str:
    """One line of strict JSON (non-finite floats as strings)."""
    return json.dumps(strict_json.encode(dataclasses.asdict(record)), allow_nan=False)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file, non-finite strings turned back into floats."""
    if not path.exists():
        return []
    return [strict_json.decode(json.loads(line)) for line in path.read_text().splitlines() if line]


class FolderSink:
    """Records into a run folder::

        steps.jsonl     one line per step
        epochs.jsonl    one line per epoch
        events.jsonl    start, checkpoint and status records, each with a "kind"
        samples/epoch-0004.npz   velocity and vorticity of the preview windows
        quality.json    the finished run's sample-quality scores (`QualityRecord`)

    On resume (a `StartRecord` with step > 0), rows past that step, which the killed run
    wrote after its last checkpoint, are dropped, so the files read as one uninterrupted run.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, lines: Iterable[str]) -> None:
        with open(self.folder / name, "a") as file:
            file.writelines(f"{line}\n" for line in lines)
            file.flush()
            os.fsync(file.fileno())

    def _truncate(self, name: str, step: int) -> None:
        path = self.folder / name
        if not path.exists():
            return
        kept = [line for line in path.read_text().splitlines()
                if line and json.loads(line)["step"] <= step]
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text("".join(f"{line}\n" for line in kept))
        os.replace(temporary, path)

    def write(self, record: Record) -> None:
        match record:
            case Steps(records=steps):
                self._append("steps.jsonl", (to_json(r) for r in steps))
            case EpochRecord():
                self._append("epochs.jsonl", [to_json(record)])
            case SampleRecord():
                samples = self.folder / "samples"
                samples.mkdir(exist_ok=True)
                stem = (f"epoch-{record.epoch:04d}" if record.name == "vorticity"
                        else record.name)
                import numpy as np

                np.savez_compressed(samples / f"{stem}.npz",
                                    velocity=record.velocity, vorticity=record.vorticity,
                                    step=record.step)
            case QualityRecord():
                path = self.folder / "quality.json"
                temporary = path.with_name(path.name + ".tmp")
                temporary.write_text(to_json(record) + "\n")
                os.replace(temporary, path)
            case StartRecord() | CheckpointRecord() | StatusRecord():
                if isinstance(record, StartRecord) and record.step > 0:
                    for name in ("steps.jsonl", "epochs.jsonl"):
                        self._truncate(name, record.step)
                kind = type(record).__name__.removesuffix("Record").lower()
                line = json.dumps({"kind": kind, **json.loads(to_json(record))})
                self._append("events.jsonl", [line])

