"""A `diffbench worker` under faults (docs/FAULTS.md): real subprocesses, real files.

SIGTERM is honoured within seconds in every phase of a run (data generation, the compile
warm-up, training, the quality assessment): the run goes back to the queue and the next
worker resumes it. A disk that fills up while a checkpoint is written fails the run with the
reason and leaves the previous checkpoint whole. The seconds from the signal to the worker's
exit are printed (``pytest -s``); the bound asserted is a generous 15 s for a shared 2-core
machine, the goal is 5 s (Slurm leaves ~90 s between its warning signal and the kill).
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest
import torch

from diffbench.engine.checkpoint import latest_checkpoint, load_checkpoint
from diffbench.engine.config import load_preset
from diffbench.engine.dataset import generate_dataset, verify_checksum
from diffbench.engine.metrics import CheckpointRecord
from diffbench.engine.run import TrainingData
from diffbench.engine.training import Trainer
from diffbench.storage import queue
from diffbench.storage.db import open_database
from diffbench.tui.runner.worker import run_config
from tests.helpers import data_file, finish, preset_toml, quick, spawn, spec

BOUND_S = 15.0  # asserted: generous for a loaded 2-core machine; the goal is 5 s


@pytest.fixture
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield database
    database.dispose()


def preset_file(folder: Path, name: str, **changes) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(preset_toml(quick(**changes)))
    return path


def wait_for(condition, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)


def terminate(processes: list[subprocess.Popen], db, run_ids: list[int], phase: str
              ) -> tuple[float, list[str]]:
    """SIGTERM to each process; the seconds until the last one exited (printed, with the
    seconds until the last run was back in the queue), and their logs (each must exit 0)."""
    began = time.monotonic()
    for process in processes:
        process.send_signal(signal.SIGTERM)
    exited, queued = {}, None
    while len(exited) < len(processes) and time.monotonic() - began < 120:
        for i, process in enumerate(processes):
            if i not in exited and process.poll() is not None:
                exited[i] = time.monotonic() - began
        if queued is None and all(r.status == "queued" for r in queue.list_runs(db, ids=run_ids)):
            queued = time.monotonic() - began
        time.sleep(0.02)
    logs = []
    for process in processes:
        code, err = finish(process, timeout=10)
        assert code == 0, err
        logs.append(err)
    seconds = max(exited.values())
    print(f"\nSIGTERM in {phase}: run(s) back in the queue after {queued or seconds:.2f} s, "
          f"worker(s) exited after {', '.join(f'{exited[i]:.2f}' for i in sorted(exited))} s")
    return seconds, logs


@pytest.mark.slow
def test_sigterm_in_data_generation_releases_the_runs_and_keeps_the_finished_chunks(
        tmp_path, db, device):
    """Two workers claim runs whose data set is missing: one generates it (20 trajectories
    at 64², two chunks of ~5 s each), the other waits on its lock. SIGTERM in the second
    chunk: both exit at once, both runs go back to the queue, the first chunk stays in the
    partial file, and the next worker resumes it."""
    home = tmp_path / "home"
    toml = preset_file(tmp_path, "generating", **{
        "data.size": 64, "data.trajectories": 20, "data.chunk": 10, "data.transitions": 37,
        "data.burn_in": 32, "quality.steps": 8})
    ids = queue.enqueue(db, [spec(toml, seed=0), spec(toml, seed=1)]).ids
    path = data_file(home, toml)
    partial = path.with_name(path.name + ".partial")
    workers = [spawn(home, db, device=device) for _ in range(2)]
    wait_for(lambda: all(r.status == "running" for r in queue.list_runs(db, ids=ids)),
             workers[0])  # each worker has claimed its run
    chunk_bytes = 10 * 5 * 2 * 32 * 32 * 4
    wait_for(lambda: partial.exists() and partial.stat().st_size > chunk_bytes * 3 // 4,
             workers[0])
    time.sleep(1.0)  # into the second chunk
    seconds, logs = terminate(workers, db, ids, "data generation (one generating, one waiting)")
    assert seconds < BOUND_S, logs
    # the generator says what it kept; the waiter stops waiting (or, if the lock came free
    # first, finds the partial file and stops before simulating anything)
    assert any("data generation stopped: 10 of 20 trajectories are kept" in log
               for log in logs), logs
    assert all("stopped waiting for" in log or "data generation stopped" in log
               for log in logs), logs
    for run in queue.list_runs(db, ids=ids):
        assert run.status == "queued" and run.attempts == 1 and "SIGTERM" in run.error, run
    assert not path.exists()
    with h5py.File(partial) as file:
        assert file.attrs["trajectories_done"] == 10

    code, err = finish(spawn(home, db, "--idle-exit", "0.5", device=device), timeout=240)
    assert code == 0, err
    assert [(r.status, r.attempts) for r in queue.list_runs(db, ids=ids)] == [("done", 2)] * 2
    verify_checksum(path)


@pytest.mark.slow
def test_sigterm_in_training_releases_the_run_after_a_checkpoint(tmp_path, db, device):
    home = tmp_path / "home"
    toml = preset_file(tmp_path, "training")
    (run_id,) = queue.enqueue(db, [spec(toml, epochs=2000)]).ids
    process = spawn(home, db, device=device)
    wait_for(lambda: queue.get_run(db, run_id).steps_done > 0, process)
    seconds, (log,) = terminate([process], db, [run_id], "training")
    assert seconds < BOUND_S, log
    run = queue.get_run(db, run_id)
    assert run.status == "queued" and "SIGTERM" in run.error, (run, log)
    step = load_checkpoint(latest_checkpoint(home / "runs" / str(run_id) / "checkpoints"))["step"]
    assert 0 < step < 2000 * 2 and step == run.steps_done


@pytest.mark.slow
def test_sigterm_in_the_quality_phase_releases_the_run_and_the_next_worker_assesses_again(
        tmp_path, db, device):
    """The assessment (250 sampler steps here, a few seconds) is stopped at the network's
    next evaluation; training stays done (its last checkpoint is on disk before the
    assessment starts), so the next worker resumes after the last epoch and assesses."""
    home = tmp_path / "home"
    toml = preset_file(tmp_path, "assessing", **{"quality.steps": 250})
    (run_id,) = queue.enqueue(db, [spec(toml)]).ids
    total = 3 * 2  # quick: 3 epochs of 2 steps
    pointer = home / "runs" / str(run_id) / "checkpoints" / "latest.json"
    process = spawn(home, db, device=device)
    wait_for(lambda: pointer.exists() and json.loads(pointer.read_text())["step"] == total,
             process)
    time.sleep(0.3)  # into the assessment
    seconds, (log,) = terminate([process], db, [run_id], "the quality phase")
    assert seconds < BOUND_S, log
    run = queue.get_run(db, run_id)
    assert run.status == "queued" and "SIGTERM" in run.error, (run, log)
    assert f"run {run_id}: released at step {total}" in log
    assert "quality" not in (run.summary or {})

    began = time.monotonic()
    code, err = finish(spawn(home, db, "--idle-exit", "0.5", device=device), timeout=240)
    assert code == 0, err
    print(f"the resumed attempt (load, assess, record) took {time.monotonic() - began:.1f} s")
    run = queue.get_run(db, run_id)
    assert run.status == "done" and run.attempts == 2, (run, err)
    assert f"run {run_id} resumed at step {total}" in err
    assert run.summary["quality"]["trajectories"] == 4


def _unshare_refusal() -> str | None:
    """Why a private tmpfs cannot be mounted without root here, or None when it can."""
    if shutil.which("unshare") is None:
        return "no unshare(1)"
    try:
        done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare failed: {error}"
    return None if done.returncode == 0 else f"no user namespaces: {done.stderr.strip()}"


@pytest.mark.slow
@pytest.mark.skipif((why := _unshare_refusal()) is not None, reason=str(why))
def test_a_disk_full_during_a_checkpoint_fails_the_run_and_keeps_the_previous_one(
        tmp_path, db):
    """A really full filesystem, no monkeypatching: the worker runs in a user and mount
    namespace (``unshare -rm``, no root needed) with its run folders on a tmpfs sized for
    2.5 checkpoints. The first two fit (the trainer keeps two); the third finds no room."""
    home = tmp_path / "home"
    toml = preset_file(tmp_path, "full", **{"train.epochs": 6})
    path = data_file(home, toml)
    generate_dataset(load_preset(str(toml)), path, device=torch.device("cpu"))
    (run_id,) = queue.enqueue(db, [spec(toml)]).ids

    # the size of one checkpoint of this very run, measured on the real disk
    config = run_config(queue.get_run(db, run_id), "cpu")
    trainer = Trainer(config, TrainingData.load(path, config.preset), tmp_path / "measure")
    record = next(r for r in trainer if isinstance(r, CheckpointRecord))
    size = Path(record.path).stat().st_size
    tmpfs = -(-int(2.5 * size) // 4096) * 4096

    runs, kept = home / "runs", tmp_path / "kept"
    runs.mkdir(parents=True)
    kept.mkdir()
    diffbench = str(Path(sys.executable).with_name("diffbench"))
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; '
              '"$3" --home "$4" worker --db "$5" --device cpu --lease 6 --idle-exit 0.5; '
              'code=$?; cp -r "$2"/. "$6"; exit $code')
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh",
         str(tmpfs), str(runs), diffbench, str(home), db.url, str(kept)],
        capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    run = queue.get_run(db, run_id)
    print(f"\ncheckpoint {size / 1e3:.0f} kB, tmpfs {tmpfs / 1e3:.0f} kB: {run.error}")
    assert run.status == "failed", (run, done.stderr)
    assert re.search(r"CheckpointWriteError: no space left on device while writing checkpoint "
                     r"step-00000006\.pt in \S+ \(previous checkpoint at step 4 kept\)$",
                     run.error), run.error
    checkpoints = kept / str(run_id) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == \
        ["latest.json", "step-00000002.pt", "step-00000004.pt"]
    assert load_checkpoint(latest_checkpoint(checkpoints))["step"] == 4


@pytest.mark.slow
def test_sigterm_while_compiling_abandons_the_warm_up_at_once(tmp_path, db):
    """`torch.compile` before the first step (tens of seconds on 2 cores, minutes for `paper`)
    has no point to stop at and nothing to save: the first signal abandons it at once."""
    home = tmp_path / "home"
    toml = preset_file(tmp_path, "compiling")
    generate_dataset(load_preset(str(toml)), data_file(home, toml), device=torch.device("cpu"))
    (run_id,) = queue.enqueue(db, [spec(toml, overrides={"compile": True})]).ids
    process = spawn(home, db)
    wait_for(lambda: queue.get_run(db, run_id).status == "running", process)
    time.sleep(3.0)  # past loading and building: compiling
    seconds, (log,) = terminate([process], db, [run_id], "the compile warm-up")
    assert seconds < BOUND_S, log
    run = queue.get_run(db, run_id)
    assert run.status == "queued" and "SIGTERM" in run.error, (run, log)
    assert run.provenance is None and run.steps_done == 0  # it never reached its first step
