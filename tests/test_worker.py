"""`diffbench worker` end to end: real SQLite file, real worker subprocesses, tiny shapes.

The preset is `tiny` shrunk (`helpers.quick`), written to a TOML file; runs are queued
with `storage.queue.enqueue` and trained by `diffbench worker` processes.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error

from diffbench.engine.config import load_preset
from diffbench.engine.dataset import generate_dataset
from diffbench.engine.device import resolve_device
from diffbench.storage import queue, records, workers
from diffbench.storage.db import open_database
from tests.helpers import data_file, drain, finish, preset_toml, quick, spawn, spec


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worker-home")


@pytest.fixture(scope="module")
def toml(home) -> Path:
    path = home.parent / "wquick.toml"
    path.write_text(preset_toml(quick()))
    return path


@pytest.fixture
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield database
    database.dispose()


@pytest.mark.slow
def test_worker_trains_runs_to_done_diverged_and_failed(home, toml, db, device):
    broken = home.parent / "wbroken.toml"  # its own data set, which we corrupt
    broken.write_text(toml.read_text())
    (home / "data").mkdir(parents=True, exist_ok=True)
    data_file(home, broken).write_bytes(b"not an hdf5 file")
    ids = queue.enqueue(db, [spec(toml, seed=0), spec(toml, seed=1),
                             spec(toml, optimizer="sgd", lr=1e6, seed=2),
                             spec(broken)]).ids
    code, err = finish(spawn(home, db, "--idle-exit", "0.5", "--threads", "2", device=device))
    assert code == 0, err
    runs = {r.id: r for r in queue.list_runs(db)}
    done, diverged, failed = ids[:2], ids[2], ids[3]
    for run_id in done:
        run = runs[run_id]
        assert run.status == "done", (run, err)
        assert run.attempts == 1 and run.steps_done > 0
        assert run.summary["final_fixed_valid_loss"] is not None
        assert run.summary["ms_per_step"] > 0
        assert run.provenance["device"] == str(resolve_device(device))
        assert run.config["optimizer"] == "adamw"
        assert run.provenance["threads"] == 2  # --threads (the test environment says 1)
        metrics = records.metrics_since(db, run_id)
        assert [s.step for s in metrics.steps] == list(range(1, run.steps_done + 1))
        assert len(metrics.epochs) == 3 and metrics.sample_ids
        edges = run.provenance["loss_bins"]  # the per-bin losses, with their edges
        assert run.summary["loss_bins"] == edges and edges[0] == 0 and edges[-1] == 1
        assert run.summary["final_fixed_valid_bins"] == list(metrics.epochs[-1].fixed_valid_bins)
        assert len(run.summary["final_fixed_valid_bins"]) == len(edges) - 1
        assert (home / "runs" / str(run_id) / "model.pt").exists()
    assert runs[diverged].status == "diverged", runs[diverged]
    assert "non-finite" in runs[diverged].error
    assert runs[failed].status == "failed"
    assert "DatasetError" in runs[failed].error and "Traceback" in runs[failed].traceback
    assert all(w.stopped_at is not None for w in workers.list_workers(db))


@pytest.mark.slow
def test_two_workers_never_train_the_same_run(home, toml, db, device):
    fresh = home.parent / "wtwo.toml"  # a data set neither has: both want to generate it
    fresh.write_text(toml.read_text())
    ids = queue.enqueue(db, [spec(fresh, seed=s, lr=2e-3) for s in range(4)]).ids
    workers = [spawn(home, db, "--idle-exit", "0.5", device=device) for _ in range(2)]
    logs = []
    for process in workers:
        code, err = finish(process)
        assert code == 0, err
        logs.append(err)
    assert sum("is missing; generating it" in log for log in logs) == 1, logs
    runs = queue.list_runs(db, ids=ids)
    assert [r.status for r in runs] == ["done"] * 4
    assert all(r.attempts == 1 for r in runs)
    for run in runs:  # each step written once: no second trainer wrote into the run
        steps = [s.step for s in records.metrics_since(db, run.id).steps]
        assert steps == list(range(1, run.steps_done + 1))


@pytest.mark.slow
def test_four_workers_claim_each_of_40_runs_exactly_once(home, db, device):
    many = home.parent / "wmany.toml"  # 1 epoch, no previews; its data set made up front
    many.write_text(preset_toml(quick(**{"train.epochs": 1, "train.samples_every": 0})))
    generate_dataset(load_preset(str(many)), data_file(home, many),
                     device=torch.device("cpu"))
    ids = queue.enqueue(db, [spec(many, seed=s) for s in range(40)]).ids
    logs = drain(home, db, workers=4, seconds=240, device=device)
    assert not any("generating" in log for log in logs), logs
    claims = [int(m) for log in logs for m in re.findall(r": run (\d+) \(attempt ", log)]
    assert sorted(claims) == sorted(ids), logs  # each run claimed once, by one worker
    worker_ids = {w.id for w in workers.list_workers(db)}
    assert len(worker_ids) == 4
    runs = queue.list_runs(db, ids=ids)
    assert [r.status for r in runs] == ["done"] * 40, [(r.id, r.status, r.error) for r in runs]
    for run in runs:
        assert run.attempts == 1 and run.steps_done > 0, run
        assert run.worker_id in worker_ids and run.provenance["worker_id"] == run.worker_id
        steps = [s.step for s in records.metrics_since(db, run.id).steps]
        assert steps == list(range(1, run.steps_done + 1))  # each step written once
        assert (home / "runs" / str(run.id) / "model.pt").exists()
    assert len({r.worker_id for r in runs}) >= 2  # they did share the queue


@pytest.mark.slow
def test_sigterm_requeues_with_checkpoint_and_another_worker_resumes_exactly(home, toml, db,
                                                                            device):
    long = {"epochs": 12}
    interrupted, reference = queue.enqueue(
        db, [spec(toml, lr=5e-4, **long, priority=1), spec(toml, lr=5e-4, **long)],
        allow_duplicates=True).ids
    process = spawn(home, db, device=device)
    deadline = time.monotonic() + 60
    while queue.get_run(db, interrupted).steps_done == 0:  # metrics flow: mid-run
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    code, err = finish(process)
    assert code == 0, err
    assert time.monotonic() - stopped < 10
    run = queue.get_run(db, interrupted)
    assert run.status == "queued" and run.attempts == 1, (run, err)
    assert "SIGTERM" in run.error
    assert 0 < run.steps_done < 12 * 2, run  # stopped before its end
    assert list((home / "runs" / str(interrupted) / "checkpoints").glob("*.pt"))

    code, err = finish(spawn(home, db, "--idle-exit", "0.5", device=device), timeout=90)
    assert code == 0, err
    run, ref = queue.get_run(db, interrupted), queue.get_run(db, reference)
    assert run.status == ref.status == "done", err
    assert run.attempts == 2 and f"run {interrupted} resumed at step" in err
    assert run.steps_done == ref.steps_done
    steps = [s.step for s in records.metrics_since(db, interrupted).steps]
    assert steps == list(range(1, run.steps_done + 1))  # truncated, then written once
    assert run.summary["final_fixed_valid_loss"] == ref.summary["final_fixed_valid_loss"]
    assert run.summary["final_fixed_valid_bins"] == ref.summary["final_fixed_valid_bins"]
    mine = torch.load(home / "runs" / str(interrupted) / "model.pt", weights_only=True)
    theirs = torch.load(home / "runs" / str(reference) / "model.pt", weights_only=True)
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def wait_mid_run(db, run_id: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while queue.get_run(db, run_id).steps_done == 0:
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.1)


def parameter_hash(path: Path) -> str:
    """sha256 over a state dict's names, dtypes, shapes and raw tensor bytes."""
    digest = hashlib.sha256()
    weights = torch.load(path, weights_only=True)
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_sigkill_lease_expires_and_another_worker_resumes(home, toml, db, device):
    killed, reference = queue.enqueue(  # the same run twice; the first is claimed first
        db, [spec(toml, lr=7e-4, epochs=12, priority=1), spec(toml, lr=7e-4, epochs=12)],
        allow_duplicates=True).ids
    process = spawn(home, db, "--lease", "2", device=device)
    wait_mid_run(db, killed, process)  # the folder is this run's now; wait for a checkpoint
    deadline = time.monotonic() + 60
    while not (home / "runs" / str(killed) / "checkpoints" / "latest.json").exists():
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.05)
    process.kill()
    process.communicate()
    run = queue.get_run(db, killed)
    assert run.status == "running" and run.steps_done < 12 * 2, run  # until its lease expires
    assert queue.get_run(db, reference).status == "queued"
    code, err = finish(spawn(home, db, "--lease", "30", "--idle-exit", "3", device=device),
                       timeout=120)
    assert code == 0, err
    run, ref = queue.get_run(db, killed), queue.get_run(db, reference)
    assert run.status == ref.status == "done" and run.attempts == 2, (run, err)
    assert ref.attempts == 1
    resumed = re.search(rf"run {killed} resumed at step (\d+)", err)
    assert resumed and 0 < int(resumed.group(1)) < run.steps_done, err  # from the checkpoint
    assert run.steps_done == ref.steps_done
    steps = [s.step for s in records.metrics_since(db, killed).steps]
    assert steps == list(range(1, run.steps_done + 1))
    assert run.summary["final_fixed_valid_loss"] is not None
    assert run.summary["final_fixed_valid_loss"] == ref.summary["final_fixed_valid_loss"]
    assert parameter_hash(home / "runs" / str(killed) / "model.pt") \
        == parameter_hash(home / "runs" / str(reference) / "model.pt")


@pytest.mark.slow
def test_cancel_stops_a_running_run(home, toml, db, device):
    (run_id,) = queue.enqueue(db, [spec(toml, lr=8e-4, epochs=40)]).ids
    process = spawn(home, db, "--lease", "1.5", "--idle-exit", "0.5", device=device)
    wait_mid_run(db, run_id, process)
    assert queue.cancel(db, [run_id]) == {run_id: "requested"}
    code, err = finish(process)
    assert code == 0, err
    run = queue.get_run(db, run_id)
    assert run.status == "cancelled" and 0 < run.steps_done < 40 * 2, (run, err)


def test_sigint_while_idle_exits_130(home, db):
    process = spawn(home, db)
    deadline = time.monotonic() + 30
    while not workers.list_workers(db):
        assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    code, err = finish(process, timeout=10)
    assert code == 130, err
    assert workers.list_workers(db)[0].stopped_at is not None


@pytest.mark.parametrize("args,message", [
    (["--max-runs", "0"], "--max-runs must be positive"),
    (["--idle-exit", "-1"], "--idle-exit must be non-negative"),
    (["--lease", "0"], "--lease must be positive"),
    (["--threads", "0"], "--threads must be positive"),
    (["--gpus", "x"], "--gpus takes 'all' or indices"),
    (["--gpus", "0,0,x"], "--gpus takes 'all' or indices"),
    (["--per-gpu", "0"], "--per-gpu takes a positive integer, got '0'"),
    (["--gpus", "0", "--per-gpu", "-1"], "--per-gpu takes a positive integer, got '-1'"),
    (["--gpus", "all", "--per-gpu", "2.5"], "--per-gpu takes a positive integer, got '2.5'"),
    (["--device", "tpu"], "tpu"),
])
def test_bad_worker_options_exit_2_and_write_nothing(tmp_path, args, message):
    from typer.testing import CliRunner

    from diffbench.tui.cli import app

    result = CliRunner().invoke(app, ["--home", str(tmp_path), "worker", *args])
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []  # no database, no run folder
