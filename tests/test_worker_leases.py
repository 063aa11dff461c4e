"""A worker that loses its run: the storage sink's fence, a paused ("zombie") `diffbench
worker` process that wakes up after its run was taken over, and a run that keeps losing its
worker until ``--max-attempts`` fails it, while a SIGTERM release does not count. Real
SQLite files and real worker subprocesses for what is about processes; tiny shapes
(`helpers.quick`)."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import torch
from cli_checks import assert_one_line_error

from diffbench.engine.config import load_preset
from diffbench.engine.dataset import generate_dataset
from diffbench.engine.metrics import EpochRecord, StepRecord, Steps
from diffbench.storage import queue, records, workers
from diffbench.storage.db import open_database
from diffbench.tui.runner.sink import StorageSink
from tests.helpers import data_file, finish, preset_toml, quick, spawn, spec


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("leases-home")


@pytest.fixture(scope="module")
def toml(home) -> Path:
    """The quick preset with previews off, its data set made up front (no worker generates
    it, so a signal never lands in data generation here)."""
    path = home.parent / "leases.toml"
    path.write_text(preset_toml(quick(**{"train.samples_every": 0})))
    generate_dataset(load_preset(str(path)), data_file(home, path), device=torch.device("cpu"))
    return path


@pytest.fixture
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    yield database
    database.dispose()


def step(n: int) -> StepRecord:
    return StepRecord(step=n, epoch=0, loss=1.0 / n, lr=1e-3, grad_norm=1.0, data_ms=0.1,
                      compute_ms=1.0, optimizer_ms=0.2)


# ----------------------------------------------------------------------------- the sink


def test_sink_of_a_worker_that_lost_its_run_writes_nothing_more(db):
    zombie = workers.register_worker(db, host="a", pid=1, device="cpu").id
    owner = workers.register_worker(db, host="b", pid=2, device="cpu").id
    (run_id,) = queue.enqueue(db, [queue.RunSpec("tiny", "adamw", "linear", 1e-3, 0.0, 0)]).ids
    queue.claim_next(db, zombie, lease_s=1)
    sink = StorageSink(db, run_id, worker_id=zombie, batch_rows=2)  # no heartbeat to ask
    sink.write(Steps((step(1), step(2))))  # a full batch: written
    far = workers.database_now(db).replace(year=2100)
    assert queue.requeue_stale(db, now=far) == (run_id,)  # paused past its lease
    queue.claim_next(db, owner)
    with pytest.raises(queue.LeaseLost, match=f"run {run_id} is not leased to worker {zombie}"):
        sink.write(Steps((step(3), step(4))))
    assert sink.lost and sink.pending == []
    sink.write(EpochRecord(epoch=0, step=4, train_loss=0.5, valid_loss=None,
                           fixed_valid_loss=None, epoch_s=1.0, valid_s=0.0, sample_s=0.0,
                           train_s=1.0))
    sink.flush()  # what the worker's failure path calls: nothing either
    batch = records.metrics_since(db, run_id)
    assert [s.step for s in batch.steps] == [1, 2] and batch.epochs == ()
    assert queue.get_run(db, run_id).worker_id == owner


# ----------------------------------------------------------------------------- the option


def test_max_attempts_is_an_option_and_must_be_positive(tmp_path):
    from typer.testing import CliRunner

    from diffbench.tui.cli import app

    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})
    assert "--max-attempts" in runner.invoke(app, ["worker", "--help"]).stdout
    for args, env in (["--max-attempts", "0"], {}), ([], {"DIFFBENCH_MAX_ATTEMPTS": "-2"}):
        result = runner.invoke(app, ["--home", str(tmp_path), "worker", *args], env=env)
        assert_one_line_error(result, "--max-attempts must be positive, got")
    assert list(tmp_path.iterdir()) == []  # no database


# ----------------------------------------------------------------------------- processes


def wait_for(condition, process: subprocess.Popen | None = None, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"worker exited {process.returncode}: {process.stderr.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def lease_expired(db, run_id: int) -> bool:
    run = queue.get_run(db, run_id)
    return run.lease_expires_at is not None and run.lease_expires_at < workers.database_now(db)


def pause(process: subprocess.Popen, path: Path) -> None:
    """SIGSTOP ``process``, at a moment it holds no SQLite write transaction (a paused
    writer would keep every other worker out of the database, not what is tested here)."""
    while True:
        process.send_signal(signal.SIGSTOP)
        connection = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # paused mid-write: let it finish, try again
            process.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        finally:
            connection.close()


@pytest.mark.slow
def test_a_paused_worker_that_lost_its_run_writes_nothing_more(home, toml, db, device,
                                                               tmp_path):
    """SIGSTOP a worker mid-run until its lease expired, let another worker take the run
    over, then SIGCONT it: it gives the run up at once (its next write is refused, or its
    heartbeat says lost) and the run is trained once, each step and epoch stored once."""
    (run_id,) = queue.enqueue(db, [spec(toml, lr=6e-4, epochs=12)]).ids
    zombie = spawn(home, db, "--lease", "2", "--idle-exit", "1", device=device)
    wait_for(lambda: queue.get_run(db, run_id).steps_done > 0, zombie)
    pause(zombie, tmp_path / "jobs.db")
    try:
        paused = queue.get_run(db, run_id)
        wait_for(lambda: lease_expired(db, run_id))
        owner = spawn(home, db, "--lease", "30", "--idle-exit", "1", device=device)
        wait_for(lambda: queue.get_run(db, run_id).worker_id not in (None, paused.worker_id),
                 owner)
    finally:
        zombie.send_signal(signal.SIGCONT)
    code, zombie_log = finish(zombie, timeout=120)
    assert code == 0, zombie_log
    code, owner_log = finish(owner, timeout=120)
    assert code == 0, owner_log
    assert f"run {run_id}: lease lost; left to its new owner" in zombie_log, zombie_log
    assert f"run {run_id}: done" in owner_log and f"run {run_id}: done" not in zombie_log
    run = queue.get_run(db, run_id)
    assert (run.status, run.attempts) == ("done", 2), (run, zombie_log, owner_log)
    assert run.worker_id != paused.worker_id and run.provenance["workers_lost"] == 1
    assert run.provenance["worker_id"] == run.worker_id
    stored = records.metrics_since(db, run_id)
    assert [s.step for s in stored.steps] == list(range(1, run.steps_done + 1))  # each once
    assert [e.epoch for e in stored.epochs] == list(range(12))


@pytest.mark.slow
def test_a_run_that_keeps_losing_its_worker_fails_and_a_sigterm_is_no_loss(home, toml, db,
                                                                           device):
    """SIGTERM (a clean release), then SIGKILL twice: with ``--max-attempts 2`` the second
    lost worker fails the run, the error naming it; the release counted for nothing."""
    (run_id,) = queue.enqueue(db, [spec(toml, lr=9e-4, epochs=40)]).ids

    def claimed(attempt: int) -> bool:
        run = queue.get_run(db, run_id)
        return run.status == "running" and run.attempts == attempt

    process = spawn(home, db, "--lease", "1", device=device)
    wait_for(lambda: claimed(1), process)
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 0, err
    run = queue.get_run(db, run_id)
    assert (run.status, run.attempts) == ("queued", 1), (run, err)
    assert "workers_lost" not in (run.provenance or {})

    for attempt in (2, 3):  # killed right after its claim; the next worker requeues it
        process = spawn(home, db, "--lease", "1", "--max-attempts", "2", device=device)
        wait_for(lambda attempt=attempt: claimed(attempt), process)
        process.kill()
        process.communicate()
        wait_for(lambda: lease_expired(db, run_id))
    last = queue.get_run(db, run_id)
    assert last.provenance["workers_lost"] == 1  # the first kill; the second is not seen yet

    code, err = finish(spawn(home, db, "--max-attempts", "2", "--idle-exit", "0.5",
                             device=device))
    assert code == 0, err
    run = queue.get_run(db, run_id)
    assert (run.status, run.attempts, run.provenance["workers_lost"]) == ("failed", 3, 2)
    expired = f"{last.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC"
    assert run.error == (f"lost its worker 2 times (last: worker {last.worker_id} on host "
                         f"{socket.gethostname()}, lease expired at {expired}); raise "
                         "--max-attempts or check its memory use")
    assert "(attempt" not in err  # the last worker failed it instead of claiming it
