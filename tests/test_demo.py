"""`diffbench demo` end to end on a shrunk sweep (`--sweep FILE`): real worker in the demo's
process, real SQLite file, real report; a re-run trains nothing; Ctrl-C checkpoints, exits
130 and the next demo continues the run; bad input exits 2 and writes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffbench.storage import queue, records
from diffbench.storage.db import open_database
from diffbench.storage.runs import RunSpec
from diffbench.tui.cli import app
from diffbench.tui.commands.demo import demo_specs
from tests.cli_checks import assert_one_line_error
from tests.helpers import DEMO_EPOCHS, SIX, data_file, preset_toml, quick

LONG = 60  # SOAP's epochs (2 steps each): time to interrupt it
QUICK = {"train.samples_every": 0, "quality.trajectories": 2, "quality.length": 5,
         "quality.steps": 4}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("demo-home")


@pytest.fixture(scope="module")
def toml(home) -> Path:
    path = home.parent / "dquick.toml"  # its data set: <home>/data/dquick-<hash8>.h5
    path.write_text(preset_toml(quick(**QUICK)))
    return path


def sweep(home: Path, toml: Path) -> Path:
    """SOAP for long enough to be interrupted, then a short AdamW run."""
    path = home.parent / "two.toml"
    path.write_text(f'preset = "{toml}"\ntag = "two"\n\n'
                    f'[[grid]]\noptimizer = "soap"\nepochs = {LONG}\n\n'
                    '[[grid]]\noptimizer = "adamw"\nepochs = 2\n')
    return path


def demo(home: Path, *args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("diffbench")), "--home", str(home), "demo",
         "--device", "cpu", "--out", str(home / "report"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


@pytest.fixture
def db(home):
    database = open_database(None, home=home)
    yield database
    database.dispose()


def demo_runs(db) -> list:
    return [r for r in queue.list_runs(db) if "demo" in r.tags]


@pytest.mark.slow
def test_demo_ctrl_c_then_rerun_continues_reports_and_a_third_reuses_everything(home, toml,
                                                                                db):
    other = queue.enqueue(db, [RunSpec(preset=str(toml), optimizer="sgd", schedule="linear",
                                       lr=1e-2, weight_decay=0.0, seed=9)]).ids[0]
    plan = sweep(home, toml)

    # 1. Ctrl-C while SOAP trains: checkpointed, back in the queue, exit 130, no report
    process = demo(home, "--sweep", str(plan), "--workers", "1")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        running = [r for r in demo_runs(db) if r.status == "running"]
        if running and running[0].steps_done >= 2:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert code == 130, err
    assert f"{data_file(home, toml).name} is missing; generating it" in err
    assert data_file(home, toml).exists()
    assert "demo: 2 runs" in err and "0 of them queued or finished before" in err
    assert "run diffbench demo again to go on" in err
    soap, adamw = demo_runs(db)
    assert soap.optimizer == "soap" and soap.status == "queued"
    assert 0 < soap.steps_done < 2 * LONG and adamw.status == "queued"
    assert not (home / "report").exists()

    # 2. the next demo resumes SOAP from its checkpoint, trains AdamW and reports
    code, out, err = finish(demo(home, "--sweep", str(plan), "--workers", "1"))
    assert code == 0, err
    assert "2 of them queued or finished before" in err
    assert f"run {soap.id} resumed at step" in err and "demo: 2 of 2 runs finished" in err
    runs = demo_runs(db)
    assert [(r.optimizer, r.status, r.attempts) for r in runs] == [("soap", "done", 2),
                                                                   ("adamw", "done", 1)]
    assert runs[0].steps_done == 2 * LONG and all("two" in r.tags for r in runs)
    assert queue.get_run(db, other).status == "queued"  # not the demo's: left alone
    for name in ("report.md", "report.html"):
        assert (home / "report" / name).stat().st_size > 0
    assert list((home / "report" / "figures").glob("*.png"))
    assert "soap" in out and "adamw" in out  # the report's table on stdout
    steps = {r.id: len(records.metrics_since(db, r.id).steps) for r in runs}
    assert steps == {runs[0].id: 2 * LONG, runs[1].id: 4}

    # 3. once more: nothing to train, the same runs reported again
    (home / "report" / "report.md").unlink()
    code, out, err = finish(demo(home, "--sweep", str(plan)))
    assert code == 0, err
    assert "(attempt" not in err  # no worker claimed anything
    again = demo_runs(db)
    assert [(r.id, r.attempts) for r in again] == [(r.id, r.attempts) for r in runs]
    assert {r.id: len(records.metrics_since(db, r.id).steps) for r in again} == steps
    assert (home / "report" / "report.md").exists() and "soap" in out


@pytest.mark.slow
def test_two_workers_train_the_runs_at_once_and_ctrl_c_stops_both(tmp_path, toml):
    """The default on 2+ cores: a worker process beside the demo's own. Both runs train at
    the same time; Ctrl-C to the demo alone reaches the helper; the rerun finishes both."""
    plan = tmp_path / "pair.toml"
    plan.write_text(f'preset = "{toml}"\ntag = "pair"\n\n'
                    f'[[grid]]\noptimizer = ["soap", "adamw"]\nepochs = {LONG}\n')
    home = tmp_path / "home"
    database = open_database(None, home=home)
    try:
        process = demo(home, "--sweep", str(plan), "--workers", "2")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if sum(r.status == "running" and r.steps_done >= 2
                   for r in demo_runs(database)) == 2:
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)  # the demo's process only, not its group
        code, _, err = finish(process)
        assert code == 130, err
        assert "2 at a time" in err
        first = demo_runs(database)
        assert [r.status for r in first] == ["queued", "queued"], err  # both checkpointed
        assert all(0 < r.steps_done < 2 * LONG for r in first)

        code, _, err = finish(demo(home, "--sweep", str(plan), "--workers", "2"))
        assert code == 0, err
        done = demo_runs(database)
        assert [(r.status, r.steps_done) for r in done] == [("done", 2 * LONG)] * 2
        a, b = done  # trained side by side: each started before the other finished
        assert a.started_at < b.finished_at and b.started_at < a.finished_at
    finally:
        database.dispose()


def test_the_demo_runs_are_tagged_and_epochs_replace_the_sweeps():
    specs = demo_specs("demo")
    assert [s.optimizer for s in specs] == SIX
    assert all(s.epochs == DEMO_EPOCHS and s.tags == ("demo",) for s in specs)
    quick = demo_specs("paper-longer", epochs=3)  # any sweep; its own tag kept
    assert len(quick) == 9 and {s.epochs for s in quick} == {3}
    assert all(s.tags == ("paper-longer", "demo") for s in quick)


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "0"], "--epochs must be positive"),
    (["--sweep", "nope"], "unknown sweep 'nope'"),
    (["--device", "tpu"], "tpu"),
    (["--threads", "0"], "--threads must be positive"),
])
def test_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    runner = CliRunner(env={"NO_COLOR": "1"})
    result = runner.invoke(app, ["--home", str(tmp_path), "demo", *args])
    assert_one_line_error(result, message)
    assert list(tmp_path.iterdir()) == []


def test_an_out_folder_that_is_a_file_exits_2(tmp_path):
    (tmp_path / "taken").write_text("")
    result = CliRunner(env={"NO_COLOR": "1"}).invoke(
        app, ["--home", str(tmp_path), "demo", "--out", str(tmp_path / "taken")])
    assert_one_line_error(result, "is not a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
