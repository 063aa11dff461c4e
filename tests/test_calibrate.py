"""`diffbench calibrate`: a real calibration at tiny sizes on the CPU (every optimizer's step
timed side by side through the trainer, seconds), stored per device and preset, listed, and
taken by the report for its step-time ratios; bad input refused before anything runs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from diffbench.engine.step_timing import Timing
from diffbench.storage import calibration, results, workers
from diffbench.storage.db import open_database
from diffbench.tui.cli import app
from tests.cli_checks import assert_one_line_error
from tests.test_step_ratios import timed_run


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One real calibration of AdamW and Muon on ``tiny`` (2 timed rounds of 2 steps)."""
    home = tmp_path_factory.mktemp("calibrate")
    runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None,
                            "DIFFBENCH_DEVICE": None})
    result = runner.invoke(app, ["--home", str(home), "calibrate", "-p", "tiny", "-O",
                                 "adamw,muon", "--device", "cpu", "--rounds", "2",
                                 "--steps", "2", "--json"])
    assert result.exit_code == 0, result.output
    return home, runner, json.loads(result.stdout)


def test_a_real_calibration_is_stored_per_device_and_preset(calibrated):
    home, _, shown = calibrated
    assert shown["preset"] == "tiny" and shown["device"].startswith("cpu · ")
    assert (shown["rounds"], shown["steps"]) == (2, 2)
    assert shown["settings"]["precision"] == "fp32" and shown["settings"]["warmup_rounds"] == 1
    times = {t["optimizer"]: t for t in shown["times"]}
    assert sorted(times) == ["adamw", "muon"]
    for t in times.values():
        assert len(t["rounds_ms"]) == 2 and all(ms > 0 for ms in t["rounds_ms"])
        assert t["ms_per_step"] == pytest.approx(sum(t["rounds_ms"]) / 2)
        assert t["ms_std"] is not None and t["implementation"]
    ratio = times["muon"]["ratio_to_adamw"]
    assert ratio["low"] <= ratio["value"] <= ratio["high"]
    assert times["adamw"]["ratio_to_adamw"]["value"] == 1.0
    db = open_database(f"sqlite:///{home / 'diffbench.db'}")
    try:
        (stored,) = calibration.calibrations(db)
    finally:
        db.dispose()
    assert stored.id == shown["id"] and stored.time("muon").rounds_ms == tuple(
        times["muon"]["rounds_ms"])


def test_list_and_the_table(calibrated):
    home, runner, shown = calibrated
    listed = runner.invoke(app, ["--home", str(home), "calibrate", "--list", "--json"])
    assert listed.exit_code == 0 and [c["id"] for c in json.loads(listed.stdout)] == [shown["id"]]
    table = runner.invoke(app, ["--home", str(home), "calibrate", "--list"])
    assert table.exit_code == 0
    assert f"calibration #{shown['id']}: {shown['device']} · preset tiny" in table.stdout
    assert "muon" in table.stdout and "× AdamW" in table.stdout


def test_the_report_takes_its_ratio_from_the_calibration(calibrated):
    home, _, shown = calibrated
    kind, _, name = shown["device"].partition(" · ")
    db = open_database(f"sqlite:///{home / 'diffbench.db'}")
    try:
        worker = workers.register_worker(db, host="h", pid=1, device="cpu").id
        device = {"device": kind, "device_name": name}
        timed_run(db, worker, "adamw", device=device, start=0, end=5, ms=50.0)
        timed_run(db, worker, "muon", device=device, start=10, end=15, ms=500.0)
        runs = results.load_runs(db)
        rows = {r.optimizer: r for r in results.summarize(
            runs, calibration.latest(calibration.calibrations(db)))}
    finally:
        db.dispose()
    times = {t["optimizer"]: t for t in shown["times"]}
    assert rows["muon"].step.source == "calibration"
    assert rows["muon"].step_ratio == pytest.approx(
        times["muon"]["ms_per_step"] / times["adamw"]["ms_per_step"])  # not the runs' 10×
    muon = next(r for r in runs if r.optimizer == "muon")
    assert muon.curve[-1].train_s == pytest.approx(20 * times["muon"]["ms_per_step"] / 1000)


def test_round_means_are_what_a_run_counts():
    from diffbench.engine.metrics import StepRecord

    timing = Timing(steps=[StepRecord(step=s, epoch=e, loss=1.0, lr=1e-3, grad_norm=1.0,
                                      data_ms=1.0, compute_ms=10.0 * e, optimizer_ms=2.0)
                           for e, s in ((1, 3), (1, 4), (2, 5), (2, 6))])
    assert timing.round_ms() == [13.0, 23.0]  # data + compute + optimizer, per round


@pytest.mark.parametrize("args,fragment", [
    ([], "--preset is required"),
    (["-p", "nope"], "nope"),
    (["-p", "tiny", "-O", "adam"], "unknown optimizer 'adam'"),
    (["-p", "tiny", "--rounds", "0"], "--rounds must be ≥ 1"),
    (["-p", "tiny", "--precision", "fp8"], "unknown precision 'fp8'"),
    (["-p", "tiny", "--device", "tpu"], "tpu"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, fragment):
    env = {"NO_COLOR": "1", "DIFFBENCH_DB": None, "DIFFBENCH_PRESET": None,
           "DIFFBENCH_DEVICE": None}
    result = CliRunner(env=env).invoke(app, ["--home", str(tmp_path), "calibrate", *args])
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "diffbench.db").exists()  # nothing written
