"""Honest step-time ratios (`storage.step_ratios`): only on the same device and preset, with
their spread, from a calibration first, else the runs' own times with the caveat when runs
shared a machine; in the report's table and caveats and in the dashboard's runtime pane and
time axis."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest

from diffbench.storage import calibration, queue, records, results, workers
from diffbench.storage.db import open_database
from diffbench.storage.runs import RunSpec
from diffbench.storage.step_ratios import (
    CALIBRATION,
    RUNS,
    SHARED,
    Placement,
    rounds_ratio,
    runs_ratio,
    shared_machine,
    step_ratio,
)
from diffbench.storage.workspace import Workspace
from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions
from diffbench.tui.report.tables import fmt_ratio, step_lines
from tests.tui_db import region_text, settle, sync

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
CPU = {"device": "cpu", "device_name": "x86_64"}
GPU = {"device": "cuda:0", "device_name": "NVIDIA H100"}


def t(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


# ----------------------------------------------------------------------------- pure rules


def test_shared_machine_finds_runs_that_overlapped_on_one_host():
    spans = {1: Placement("cpu", "a", t(0), t(10)), 2: Placement("cpu", "a", t(5), t(15)),
             3: Placement("cpu", "a", t(20), t(30)), 4: Placement("cpu", "b", t(0), t(40)),
             5: Placement("cpu", "a", t(25), None),  # still running: lasts until now
             6: Placement("cpu", "a", t(40), t(50)),  # after 3 ended, but 5 still runs
             7: Placement("cpu", None, t(0), t(50)),  # no host recorded: unknown
             8: Placement("cpu", "c", t(0), t(10)), 9: Placement("cpu", "c", t(10), t(20))}
    assert shared_machine(spans) == {1, 2, 3, 5, 6}  # 8 then 9 touch, never overlap


def test_spreads_of_runs_and_of_paired_rounds():
    ratio = runs_ratio([150.0, 170.0], [100.0, 110.0])
    assert ratio.value == pytest.approx(160 / 105)
    assert (ratio.low, ratio.high) == pytest.approx((150 / 110, 170 / 100))
    assert ratio.text() == "1.52× (1.36–1.70)"
    paired = rounds_ratio([12.0, 22.0, 11.0], [10.0, 20.0, 10.0])  # a slow middle round
    assert paired.value == pytest.approx(45 / 40)
    assert (paired.low, paired.high) == pytest.approx((1.1, 1.2))  # the pairs cancel it
    assert runs_ratio([1.0], [2.0]).text() == "0.50×"


@dataclass(frozen=True)
class Timed:
    optimizer: str
    device_key: str | None
    preset: str
    ms_per_step: float | None
    shared: bool = False


@dataclass(frozen=True)
class Cal:
    id: int
    table: dict

    def ratio(self, optimizer, base):
        if optimizer not in self.table or base not in self.table:
            return None
        return rounds_ratio(self.table[optimizer], self.table[base])


def test_ratio_only_on_the_same_device_and_preset():
    adamw = [Timed("adamw", "cpu · x", "tiny", 100.0), Timed("adamw", "cpu · x", "tiny", 110.0)]
    muon = [Timed("muon", "cpu · x", "tiny", 150.0)]
    same = step_ratio(muon, adamw)
    assert same.source == RUNS and same.ratio.value == pytest.approx(150 / 105)
    assert (same.device, same.preset, same.caveat) == ("cpu · x", "tiny", None)

    other_preset = step_ratio([Timed("muon", "cpu · x", "small", 150.0)], adamw)
    assert other_preset.ratio is None and other_preset.why == "other preset"
    assert other_preset.text() == "not comparable (other preset)"
    other_device = step_ratio([Timed("muon", "cuda · H100", "tiny", 15.0)], adamw)
    assert other_device.ratio is None and other_device.why == "other device"
    assert step_ratio([Timed("muon", None, "tiny", 1.0)], adamw).why == "no step times"

    shared = step_ratio([Timed("muon", "cpu · x", "tiny", 150.0, shared=True)], adamw)
    assert shared.caveat == SHARED and shared.text().endswith("†")


def test_a_calibration_of_the_device_and_preset_comes_first():
    muon = [Timed("muon", "cuda · H100", "paper", 80.0, shared=True)]
    adamw = [Timed("adamw", "cpu · x", "paper", 900.0)]  # never on the H100: runs can't say
    cal = Cal(7, {"adamw": [50.0, 52.0], "muon": [60.0, 65.0]})
    got = step_ratio(muon, adamw, {("cuda · H100", "paper"): cal})
    assert got.source == CALIBRATION and got.calibration == 7 and got.caveat is None
    assert got.ratio.value == pytest.approx(125 / 102) and got.text().endswith(" cal.")
    other = step_ratio(muon, adamw, {("cuda · H100", "tiny"): cal})  # another preset's
    assert other.ratio is None and other.why == "other device"


# ----------------------------------------------------------------------------- database


def timed_run(db, worker, optimizer, *, preset="tiny", device=CPU, host="node-a",
              start=0.0, end=10.0, ms=100.0, steps=10):
    """A done run with explicit claim and finish times, its host and device, 2 epochs."""
    (run_id,) = queue.enqueue(db, [RunSpec(preset, optimizer, "linear", 1e-3, 0.0,
                                           seed=int(start * 10) + int(ms), epochs=2)]).ids
    queue.claim_next(db, worker, ids=[run_id], lease_s=1e6, now=t(start))
    queue.record_start(db, run_id, worker, provenance={**device, "host": host})
    records.add_epoch_metrics(db, run_id, [
        {"epoch": e, "step": steps * (e + 1), "train_loss": 1.0 / (e + 1),
         "valid_loss": 1.0 / (e + 1), "fixed_valid_loss": 1.0 / (e + 1), "epoch_s": 1.0,
         "valid_s": 0.1, "sample_s": 0.0, "train_s": steps * (e + 1) * ms / 1000}
        for e in range(2)])
    records.add_step_metrics(db, run_id, [
        {"step": s, "epoch": (s - 1) // steps, "loss": 1.0 / s, "lr": 1e-3, "grad_norm": 1.0,
         "data_ms": 0.0, "compute_ms": ms - 10.0, "optimizer_ms": 10.0}
        for s in range(1, 2 * steps + 1)])
    queue.finish(db, run_id, worker, "done", summary={"ms_per_step": ms},
                 steps_done=2 * steps, now=t(end))
    return run_id


@pytest.fixture
def db(tmp_path):
    database = open_database(f"sqlite:///{tmp_path / 'home' / 'diffbench.db'}")
    yield database
    database.dispose()


def overlapping_study(db):
    """AdamW and Muon trained at once on node-a (the demo's case), SGD alone on node-b,
    Prodigy on a GPU only."""
    worker = workers.register_worker(db, host="node-a", pid=1, device="cpu").id
    return {"adamw": timed_run(db, worker, "adamw", start=0, end=10, ms=78.0),
            "muon": timed_run(db, worker, "muon", start=1, end=12, ms=63.0),
            "sgd": timed_run(db, worker, "sgd", host="node-b", start=0, end=10, ms=70.0),
            "prodigy": timed_run(db, worker, "prodigy", device=GPU, start=30, end=40,
                                 ms=20.0)}


def test_report_marks_shared_machines_and_refuses_other_devices(db):
    ids = overlapping_study(db)
    runs = results.load_runs(db)
    shared = {r.optimizer: r.shared for r in runs}
    assert shared == {"adamw": True, "muon": True, "sgd": False, "prodigy": False}
    rows = {r.optimizer: r for r in results.summarize(runs)}
    assert rows["muon"].step.source == RUNS and rows["muon"].step.caveat == SHARED
    assert fmt_ratio(rows["muon"]) == "0.81× †"
    assert rows["sgd"].step.caveat == SHARED  # its baseline, AdamW, shared node-a
    assert fmt_ratio(rows["prodigy"]) == "not comparable (other device)"
    lines = " ".join(step_lines(list(rows.values()), runs, []))
    assert f"† {SHARED}: runs {ids['adamw']}, {ids['muon']} overlapped" in lines
    assert "Not comparable" in lines and "diffbench calibrate -p PRESET" in lines


def test_report_takes_ratios_and_time_from_a_calibration(db):
    overlapping_study(db)
    stored = calibration.save_calibration(
        db, device="cpu · x86_64", preset="tiny", host="node-a", steps=20,
        rounds_ms={"adamw": [50.0, 52.0, 51.0], "muon": [60.0, 64.0, 62.0],
                   "sgd": [40.0, 41.0, 42.0]},
        implementations={"adamw": "for-loop"}, settings={"precision": "fp32"})
    assert stored.time("muon").ms_std == pytest.approx(2.0) and stored.rounds == 3
    assert stored.time("adamw").implementation == "for-loop"
    runs = results.load_runs(db)
    muon = next(r for r in runs if r.optimizer == "muon")
    assert muon.timed_by == CALIBRATION
    assert [p.train_s for p in muon.curve] == pytest.approx([10 * 0.062, 20 * 0.062])
    prodigy = next(r for r in runs if r.optimizer == "prodigy")
    assert prodigy.timed_by == RUNS and prodigy.curve[-1].train_s == pytest.approx(0.4)
    table = calibration.latest(calibration.calibrations(db))
    rows = {r.optimizer: r for r in results.summarize(runs, table)}
    assert rows["muon"].step.source == CALIBRATION and rows["muon"].step.caveat is None
    assert fmt_ratio(rows["muon"]) == "1.22× (1.20–1.23) cal."
    lines = " ".join(step_lines(list(rows.values()), runs, [stored]))
    assert f"calibration #{stored.id} on cpu · x86_64, preset tiny" in lines
    assert "steps × the calibrated ms/step for 3 of 4 finished runs" in lines


# ----------------------------------------------------------------------------- dashboard


def make_app(db, tmp_path, now=None):
    return DashboardApp(db, Workspace.resolve(tmp_path / "home"),
                        DashboardOptions(refresh_s=3600, clock=lambda: now or t(60)))


@sync
async def test_dashboard_runtime_pane_falls_back_with_the_caveat(db, tmp_path):
    overlapping_study(db)
    app = make_app(db, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        costs = region_text(app, "#runtime-costs")
        assert "ms/step, ratio to AdamW on cpu · x86_64 · tiny" in costs
        assert "the runs' own times" in costs and f"⚠ {SHARED}" in costs
        assert "muon" in costs and "0.81×" in costs and "prodigy" not in costs
        assert "1 runs on other devices or presets: not comparable" in costs
        await pilot.press("t")  # x axis: training time, as measured
        await settle(pilot)
        assert "vs training time (s) †" in region_text(app, "#curves-title")
        legend = region_text(app, "#loss-legend").replace("\n", " ")
        assert "† measured while runs shared the" in legend


@sync
async def test_dashboard_uses_a_calibration_for_ratios_and_the_time_axis(db, tmp_path):
    ids = overlapping_study(db)
    stored = calibration.save_calibration(
        db, device="cpu · x86_64", preset="tiny", host="node-a", steps=20,
        rounds_ms={"adamw": [50.0, 52.0], "muon": [60.0, 64.0]})
    app = make_app(db, tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        views = {r.optimizer: r for r in app.snapshot.runs}
        assert views["muon"].step_ms == pytest.approx(62.0) and views["sgd"].step_ms is None
        assert views["adamw"].shared and not views["sgd"].shared
        costs = region_text(app, "#runtime-costs")
        assert f"calibration #{stored.id}, 2 rounds × 20 steps" in costs
        assert "1.22× (1.20–1.23)" in costs and SHARED not in costs
        await pilot.press("t")
        await settle(pilot)
        assert "calibrated training time (s)" in region_text(app, "#curves-title")
        # the axis: steps × 62 ms for the selected run (the first, AdamW: × 51 ms)
        plotted = app.curves[ids["adamw"]]
        assert plotted.train_by_step.x[-1] == 20


def test_report_files_say_where_step_times_come_from(db, tmp_path):
    from rich.console import Console

    from diffbench.tui.report.write import write_report

    overlapping_study(db)
    quiet = Console(file=open(tmp_path / "terminal.txt", "w"), width=200)  # noqa: SIM115
    markdown = write_report(db, tmp_path / "before", console=quiet).read_text()
    assert "0.81× †" in markdown and f"† {SHARED}" in markdown
    assert "## Step time" in markdown and "No calibration stored" in markdown
    calibration.save_calibration(db, device="cpu · x86_64", preset="tiny", host="node-a",
                                 steps=20, rounds_ms={"adamw": [50.0], "muon": [60.0]})
    markdown = write_report(db, tmp_path / "after", console=quiet).read_text()
    assert "1.20× cal." in markdown and "| #1 | cpu · x86_64 | tiny | muon |" in markdown
    assert "steps × the calibrated ms/step" in markdown
    quiet.file.close()
