"""Helpers shared by several test modules, so that no test module imports another.

A quick preset and its TOML text (the CLI and the worker take preset paths), the shipped
sweeps' facts that more than one module checks, and real `diffbench worker` subprocesses.
Fixtures live in conftest.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from diffbench.engine import checkpoint
from diffbench.engine.config import Preset, dataset_name, load_preset, override
from diffbench.storage.runs import RunSpec

SIX = ["adamw", "sgd", "muon", "soap", "prodigy", "schedulefree"]  # the shipped sweeps' order
DEMO_EPOCHS = 375  # the demo sweep's epochs: its 1,500 steps at 4 steps per epoch


# ----------------------------------------------------------------------------- presets


def data_file(home: Path, preset: str | Path) -> Path:
    """Where the worker, `train` and `data generate` keep ``preset``'s data set in ``home``
    (a preset file's name carries its recipe's hash: `engine.config.dataset_name`)."""
    return home / "data" / f"{dataset_name(load_preset(preset))}.h5"


def preset_toml(preset: Preset) -> str:
    """``preset`` as a preset file's text (`--preset` and queued runs take paths)."""
    lines = []
    for section, values in preset.to_dict().items():
        if section == "name":
            continue
        if section == "optimizers":
            for name, entry in values.items():
                lines += [f"[optimizers.{name}]", *(f"{k} = {v!r}" for k, v in entry.items())]
            continue
        lines += [f"[{section}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    return "\n".join(lines) + "\n"


def quick(**changes) -> Preset:
    """`tiny` shrunk to 10 trajectories of 5 states at 16² and a toy U-Net (8/16 channels),
    3 epochs of 2 steps: a whole run, previews and quality included, in seconds."""
    return override(load_preset("tiny"), {
        "data.size": 32, "data.trajectories": 10, "data.transitions": 8, "data.burn_in": 3,
        "data.chunk": 5, "model.channels": [8, 16], "train.batch_size": 4,
        "train.epochs": 3, "train.samples_every": 2, "train.sample_steps": 4,
        "train.sample_count": 2, **changes})


# ----------------------------------------------------------------------------- workers


def spec(toml: Path, **changes) -> RunSpec:
    """An AdamW run of the preset file ``toml``, seed 0, unless ``changes`` say otherwise."""
    values = {"preset": str(toml), "optimizer": "adamw", "schedule": "linear", "lr": 1e-3,
              "weight_decay": 0.0, "seed": 0, **changes}
    return RunSpec(**values)


def spawn(home: Path, db, *args: str, device: str = "cpu") -> subprocess.Popen:
    """A `diffbench worker` process on ``db`` (anything with ``.url``), lease 6 s unless
    ``args`` say otherwise."""
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("diffbench")), "--home", str(home), "worker",
         "--db", db.url, "--device", device, "--lease", "6", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(process: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:
    """A worker's exit code and stderr log."""
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def drain(home: Path, db, workers: int, seconds: float, device: str = "cpu") -> list[str]:
    """Run ``workers`` worker processes until the queue is empty (each exits after 1 s idle);
    their stderr logs. A worker that fails or outlives ``seconds`` fails the test."""
    deadline = time.monotonic() + seconds  # the whole drain, however loaded the machine
    processes = [spawn(home, db, "--lease", "30", "--idle-exit", "1", device=device)
                 for _ in range(workers)]
    logs = []
    try:
        for process in processes:
            code, err = finish(process, timeout=max(deadline - time.monotonic(), 1))
            assert code == 0, err
            logs.append(err)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return logs


# ----------------------------------------------------------------------------- faults


def no_space(monkeypatch, after_step: int, where: str) -> None:
    """ENOSPC for the temporary file of every checkpoint past ``after_step``, where a full disk
    raises it: at a ``write`` once its first KiB is in (the checkpoint module's ``open`` gives
    files that count), or at the ``fsync`` (ext4/xfs delayed allocation finds no room for the
    pages written). Every other file is left alone."""
    def doomed(name: str) -> bool:
        found = re.fullmatch(r"step-(\d+)\.pt\.tmp", Path(name).name)
        return found is not None and int(found[1]) > after_step

    def full() -> OSError:
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if where == "fsync":
        real_fsync = os.fsync

        def fsync(fd: int) -> None:
            if doomed(os.readlink(f"/proc/self/fd/{fd}")):
                raise full()
            real_fsync(fd)

        monkeypatch.setattr(checkpoint.os, "fsync", fsync)
        return

    class Filling(io.FileIO):
        written = 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > 1024:
                raise full()
            return super().write(data)

    def open_(path, mode="r", *args, **kwargs):
        if doomed(str(path)) and mode == "wb":
            return Filling(path, "wb")  # unbuffered: torch.save's own writes fail
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "open", open_, raising=False)
