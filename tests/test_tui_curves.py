"""The dashboard's curves pane and layout, driven through Textual's pilot against real SQLite
databases: a hand-made one with three seeds per setting (bands need seeds; every value and
time fixed, so its SVG snapshots draw the same everywhere) and the one a real worker wrote
(`tests.tui_db.trained_workspace`). Grouped mean ± std bands, EMA smoothing, log-x, the x
axis choice, the pinned reference, the t-bin view, ASCII markers, the honest validation
column, and every pane usable at 80×24, 120×40 and 160×48.

Update the snapshots after an intended change:
pytest tests/test_tui_curves.py --snapshot-update (and look at the SVGs)."""

from __future__ import annotations

import datetime as dt
import math
import re
import statistics
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import DataTable

from diffbench.storage import queue, records, workers
from diffbench.storage.db import Database, open_database
from diffbench.storage.runs import RunSpec
from diffbench.storage.workspace import Workspace
from diffbench.tui.dashboard import charts
from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions
from diffbench.tui.dashboard.charts import ema, seeds_mean
from diffbench.tui.dashboard.series import Curve
from tests.tui_db import (
    BRAILLE,
    LOCATION,
    NOW,
    fixed_workspace,
    region_text,
    settle,
    sync,
    trained_workspace,
)

SIZES = [(80, 24), (120, 40), (160, 48)]
EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0)  # engine.diffusion.LOSS_BINS
STEPS, EPOCHS = 120, 4
# (optimizer, schedule, lr, wd, loss scale, state of each seed)
SETTINGS = (("adamw", "linear", 1e-3, 0.01, 1.0, ("done", "done", "done")),
            ("muon", "linear", 2e-2, 0.0, 0.7, ("done", "done", "done")),
            ("soap", "cosine", 3e-3, 0.01, 0.85, ("done", "running")))


# ----------------------------------------------------------------------------- database


def _at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def _losses(scale: float, seed: int, steps: int) -> np.ndarray:
    """A falling loss with a seed's own level and per-step noise (fixed by the seed)."""
    rng = np.random.default_rng(100 * seed + round(10 * scale))
    s = np.arange(1, steps + 1)
    level = scale * (1 + 0.15 * (seed - 1)) * (0.05 + 1.0 / (1 + s / 10))
    return level * np.exp(0.1 * rng.standard_normal(steps))


def _fill(db: Database) -> dict[str, list[int]]:
    specs, states = [], []
    for optimizer, schedule, lr, wd, scale, seeds in SETTINGS:
        for seed, state in enumerate(seeds):
            specs.append(RunSpec(preset="tiny", optimizer=optimizer, schedule=schedule, lr=lr,
                                 weight_decay=wd, seed=seed, epochs=EPOCHS))
            states.append((optimizer, scale, seed, state))
    ids = queue.enqueue(db, specs, now=_at(-3600)).ids
    worker = workers.register_worker(db, host="gpu-box", pid=7, device="cuda:0",
                                     now=_at(-900)).id
    by_optimizer: dict[str, list[int]] = {}
    for run_id, (optimizer, scale, seed, state) in zip(ids, states, strict=True):
        by_optimizer.setdefault(optimizer, []).append(run_id)
        queue.claim_next(db, worker, ids=[run_id], lease_s=3600, now=_at(-600))
        queue.record_start(db, run_id, worker, provenance={
            "device": "cuda:0", "device_name": "H100", "loss_bins": list(EDGES)})
        steps = STEPS if state == "done" else STEPS // 2
        per_epoch = STEPS // EPOCHS
        loss = _losses(scale, seed, steps)
        opt_ms = {"adamw": 5.0, "muon": 7.0, "soap": 12.0}[optimizer]
        records.add_step_metrics(db, run_id, [
            {"step": s, "epoch": (s - 1) // per_epoch, "loss": float(loss[s - 1]), "lr": 1e-3,
             "grad_norm": 1.0, "data_ms": 1.0, "compute_ms": 20.0 + s % 3,
             "optimizer_ms": opt_ms} for s in range(1, steps + 1)])
        epochs = []
        for e in range(steps // per_epoch):
            step = (e + 1) * per_epoch
            mean = float(loss[step - per_epoch:step].mean())
            fixed = scale * (1 + 0.15 * (seed - 1)) * (0.07 + 1.0 / (1 + step / 10))
            epochs.append({
                "epoch": e, "step": step, "train_loss": mean, "valid_loss": fixed * 1.1,
                "fixed_valid_loss": fixed, "epoch_s": 2.0, "valid_s": 0.2, "sample_s": 0.0,
                "train_s": step * (21.0 + opt_ms) / 1000,
                "fixed_valid_bins": tuple(fixed * (0.3 + 2.5 * t ** 4) for t in EDGES[1:])})
        records.add_epoch_metrics(db, run_id, epochs)
        if state == "done":
            queue.finish(db, run_id, worker, "done", now=_at(-100))
    queue.heartbeat(db, worker, by_optimizer["soap"][-1], lease_s=3600, now=_at(-5))
    return by_optimizer


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """(home, database, run ids by optimizer): three settings, 3 + 3 + 2 seeds."""
    home = tmp_path_factory.mktemp("tui-seeds")
    db = open_database(f"sqlite:///{home / 'diffbench.db'}")
    ids = _fill(db)
    yield home, db, ids
    db.dispose()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workspace(tmp_path_factory.getbasetemp() / "tui-trained")


def make_app(db, home: Path, **options) -> DashboardApp:
    return DashboardApp(db, Workspace.resolve(home), DashboardOptions(
        refresh_s=3600, clock=lambda: NOW, location=LOCATION, **options))


def plot_text(app) -> str:
    return region_text(app, "#loss-plot")


def readable_plot(text: str) -> bool:
    """A plotext plot whose labels stand apart: y ticks (`┤`) on at least three rows, and
    the x tick labels on a row of their own below the axis, as separate numbers."""
    lines = text.splitlines()
    axis = next((i for i, line in enumerate(lines) if "└" in line), None)
    if axis is None or axis + 1 >= len(lines):
        return False
    ticks = [line for line in lines[:axis] if "┤" in line]
    labels = lines[axis + 1].split()
    numbers = all(re.fullmatch(r"-?[\d.]+(e[-+]?\d+)?[kMG]?", label) for label in labels)
    return len(ticks) >= 3 and len(labels) >= 2 and numbers


# ----------------------------------------------------------------------------- maths


def test_ema_is_debiased_and_smooths():
    assert ema([2.0, 2.0, 2.0], 0.9) == pytest.approx((2.0, 2.0, 2.0))  # no pull to 0
    noisy = [1.0, 3.0] * 20
    smoothed = ema(noisy, 0.9)
    assert statistics.pstdev(smoothed[10:]) < 0.3 * statistics.pstdev(noisy)
    assert smoothed[-1] == pytest.approx(2.0, abs=0.2)


def test_seeds_mean_is_mean_and_sample_std_over_the_common_range():
    a = Curve((1.0, 2.0, 3.0, 4.0), (1.0, 1.0, 1.0, 1.0))
    b = Curve((2.0, 3.0, 4.0, 5.0), (3.0, 3.0, 3.0, 3.0))
    line, band, seeds = seeds_mean([a, b], points=5)
    assert seeds == 2 and line.x[0] == 2.0 and line.x[-1] == 4.0  # where both have data
    assert line.y == pytest.approx((2.0,) * 5)
    low, high = band
    assert high.y[0] - line.y[0] == pytest.approx(statistics.stdev([1.0, 3.0]))
    assert low.y[0] == pytest.approx(2.0 - math.sqrt(2))
    one, none, count = seeds_mean([a, Curve((), ())])
    assert one == a and none is None and count == 1


def test_default_reference_is_adamw_linear_of_the_selected_preset():
    from diffbench.tui.dashboard.state import RunView

    def run(id_, optimizer, schedule, preset="tiny", final=None, steps=10):
        return RunView(id=id_, status="done" if final else "running", preset=preset,
                       optimizer=optimizer, schedule=schedule, lr=1e-3, wd=0.0, seed=0,
                       epochs_done=1, epochs_total=2, progress=0.5, steps=steps,
                       train_loss=1.0, valid_loss=1.0, final_loss=final, ms_per_step=1.0,
                       eta_s=None, device="cpu", worker_id=None)

    runs = [run(1, "adamw", "cosine", final=0.1), run(2, "adamw", "linear", "paper", 0.1),
            run(3, "adamw", "linear"), run(4, "adamw", "linear", final=0.3),
            run(5, "adamw", "linear", final=0.2), run(6, "muon", "linear", final=0.05),
            run(7, "adamw", "linear", final=0.01, steps=0)]
    assert charts.default_reference(runs, "tiny") == 5  # best finished one of this preset
    assert charts.default_reference(runs, "paper") == 2
    assert charts.default_reference(runs[:2] + runs[5:6], "tiny") == 2  # another preset
    assert charts.default_reference([runs[0], runs[5]], "tiny") is None


# ----------------------------------------------------------------------------- pilot


@sync
async def test_grouping_draws_each_setting_as_mean_with_a_band(seeds):
    home, db, ids = seeds
    app = make_app(db, home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        table = app.query_one("#runs-table", DataTable)
        rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
        assert [r[1] for r in rows] == ["adamw", "muon", "soap"]
        await pilot.press("space", "down")  # mark AdamW's setting (all three seeds), go on
        await settle(pilot)
        assert app.marked == set(ids["adamw"]) and app.selected in ids["muon"]
        legend = str(app.query_one("#loss-legend").render())
        assert "adamw·linear lr 0.001 wd 0.01: mean ± std over 3 seeds" in legend
        assert "muon·linear lr 0.02 wd 0: mean ± std over 3 seeds" in legend
        assert "░ ±std" in legend
        assert set(app.curves) >= {*ids["adamw"], *ids["muon"]}  # every seed was read
        text = plot_text(app)
        assert "░" in text and BRAILLE & set(text)  # a filled band and the mean lines
        await pilot.press("up", "space")  # unmark the whole setting again
        await settle(pilot)
        assert app.marked == set()


@sync
async def test_group_band_spans_the_seeds(seeds):
    """The band drawn is the seeds' mean ± sample std at each step."""
    home, db, ids = seeds
    app = make_app(db, home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        views = {r.id: r for r in app.snapshot.runs}
        items, _ = app._plotted(views)
        (trace,) = charts.traces(items, (), app.curves, app.chart, grouped=True)
    losses = np.stack([_losses(1.0, seed, STEPS) for seed in range(3)])
    step = 60
    at = trace.line.x.index(min(trace.line.x, key=lambda x: abs(x - step)))
    x = trace.line.x[at]
    exact = [float(np.interp(x, np.arange(1, STEPS + 1), row)) for row in losses]
    assert trace.seeds == 3 and trace.run_ids == tuple(ids["adamw"])
    assert trace.line.y[at] == pytest.approx(statistics.fmean(exact), rel=1e-6)
    assert trace.band[1].y[at] - trace.line.y[at] == pytest.approx(statistics.stdev(exact),
                                                                   rel=1e-6)


@sync
async def test_smoothing_log_x_and_the_x_axis(seeds):
    home, db, _ = seeds
    app = make_app(db, home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        title = lambda: str(app.query_one("#curves-title").render())  # noqa: E731
        await pilot.press("m")
        assert "EMA 0.9" in title() and "EMA 0.9, raw faint" in str(
            app.query_one("#loss-legend").render())
        views = {r.id: r for r in app.snapshot.runs}
        items, _ = app._plotted(views)
        (trace,) = charts.traces(items, (), app.curves, app.chart, grouped=False)
        assert trace.raw is not None and len(trace.raw.y) == len(trace.line.y)
        assert statistics.pstdev(np.diff(trace.line.y)) < statistics.pstdev(
            np.diff(trace.raw.y)) / 2
        await pilot.press("M")
        assert "EMA 0.95" in title()
        await pilot.press("x")
        assert "log-x" in title()
        await pilot.press("t")
        assert "vs training time (s)" in title()
        await pilot.press("t")
        assert "vs epoch" in title()
        axis = plot_text(app).splitlines()[-2].split()  # the x tick labels
        assert float(axis[-1]) == pytest.approx(EPOCHS, rel=0.05)
        await pilot.press("t", "x", "m")
        assert title() == "loss (log) vs step"
        assert readable_plot(plot_text(app)), plot_text(app)


@sync
async def test_the_reference_is_adamw_linear_and_p_pins_another(seeds):
    home, db, ids = seeds
    app = make_app(db, home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        legend = lambda: str(app.query_one("#loss-legend").render())  # noqa: E731
        await pilot.press("down", "down", "down")  # muon's first seed
        await settle(pilot)
        assert app.selected == ids["muon"][0]
        best = min(ids["adamw"], key=lambda i: next(
            r.final_loss for r in app.snapshot.runs if r.id == i))
        assert f"reference #{best} adamw·linear lr 0.001" in legend()
        assert best in app.curves  # read for the chart
        await pilot.press("p")  # pin the selected muon run
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)
        assert f"reference #{ids['muon'][0]} muon·linear" in legend()
        await pilot.press("up", "p")  # on the pinned run: unpinned, no reference
        await settle(pilot)
        assert "reference" not in legend()
        await pilot.press("g")  # grouped: the reference is its setting's mean
        app.pinned = charts.AUTO
        await pilot.press("down")
        await settle(pilot)
        assert "reference adamw·linear lr 0.001 wd 0.01: mean over 3 seeds" in legend()


@sync
async def test_t_bin_view_shows_the_loss_per_noise_level(seeds):
    home, db, ids = seeds
    app = make_app(db, home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await settle(pilot)
        assert "fixed-noise loss (log) per t-bin" in str(app.query_one("#curves-title").render())
        text = plot_text(app)
        ticks = text.splitlines()[-2].split()
        assert ticks == [".2", ".4", ".6", ".8", ".9", ".95", ".99", "1"]
        assert BRAILLE & set(text)
        await pilot.press("g")
        await settle(pilot)
        views = {r.id: r for r in app.snapshot.runs}
        items, _ = app._plotted(views)
        (trace,) = charts.traces(items, (), app.curves, app.chart, grouped=True)
        bins = np.array([views[i].fixed_valid_bins for i in ids["adamw"]])
        assert trace.line.y == pytest.approx(tuple(bins.mean(axis=0)))
        assert trace.band[1].y == pytest.approx(tuple(bins.mean(0) + bins.std(0, ddof=1)))
        assert "░" in plot_text(app)


@sync
async def test_t_bins_of_real_worker_runs(trained):
    """The worker's runs measured the bins on the engine's edges: the view labels them."""
    db = open_database(trained.url)
    try:
        app = DashboardApp(db, Workspace.resolve(trained.home), DashboardOptions())
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            await pilot.press("space", "down", "b")
            await settle(pilot)
            text = plot_text(app)
            legend = str(app.query_one("#loss-legend").render())
    finally:
        db.dispose()
    assert text.splitlines()[-2].split() == [".2", ".4", ".6", ".8", ".9", ".95", ".99", "1"]
    assert f"#{trained.done[1]} #{trained.done[0]}" in legend
    assert readable_plot(text), text


@sync
async def test_ascii_draws_markers_not_braille(seeds):
    home, db, _ = seeds
    app = make_app(db, home, ascii=True)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        await pilot.press("g", "space", "down", "m")
        await settle(pilot)
        text = plot_text(app)
        legend = str(app.query_one("#loss-legend").render())
    assert not BRAILLE & set(text) and "░" not in text
    assert {"*", "+", ".", ":"} <= set(text)  # two means, their bands, the raw curves
    assert "* muon·linear" in legend and "+ adamw·linear" in legend  # selected first


def test_no_color_means_ascii_charts(seeds, monkeypatch):
    home, db, _ = seeds
    monkeypatch.setenv("NO_COLOR", "1")

    @sync
    async def run():
        app = make_app(db, home)
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            return app.ascii, plot_text(app)

    ascii, text = run()
    assert ascii and not BRAILLE & set(text) and "*" in text


def test_cli_ascii_option_reaches_the_app(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from diffbench.tui.cli import app as cli
    from diffbench.tui.dashboard import app as dashboard

    seen = {}
    monkeypatch.setattr(dashboard.DashboardApp, "run",
                        lambda self: seen.setdefault("ascii", self.options.ascii))
    result = CliRunner().invoke(cli, ["--home", str(tmp_path), "tui", "--ascii"])
    assert result.exit_code == 0, result.output
    assert seen == {"ascii": True}
    help_text = CliRunner(env={"NO_COLOR": "1"}).invoke(cli, ["tui", "--help"]).output
    assert "--ascii" in help_text and "braille" in help_text


@sync
async def test_valid_column_is_the_fixed_noise_loss(seeds):
    home, db, ids = seeds
    app = make_app(db, home)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        table = app.query_one("#runs-table", DataTable)
        labels = [str(c.label) for c in table.columns.values()]
        rows = {int(str(table.get_row_at(i)[0])): [str(c) for c in table.get_row_at(i)]
                for i in range(table.row_count)}
    column = next(i for i, label in enumerate(labels) if label.startswith("valid"))
    assert labels[column] == "valid fixed-ε"
    run = ids["adamw"][0]
    last = records.metrics_since(db, run).epochs[-1]
    assert float(rows[run][column]) == pytest.approx(last.fixed_valid_loss, rel=1e-3)
    assert last.valid_loss != pytest.approx(last.fixed_valid_loss, rel=1e-3)


# ----------------------------------------------------------------------------- layout


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@sync
async def test_every_plot_has_height_and_readable_labels(seeds, size):
    """Both plots (the runtime one was squeezed to a line at 160×48) and every pane, at the
    three sizes: visible at once, or through the keys 1–5."""
    home, db, _ = seeds
    app = make_app(db, home)
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        for key, pane, plot in (("2", "#curves", "#loss-plot"),
                                ("3", "#runtime", "#runtime-plot")):
            await pilot.press(key)
            await settle(pilot)
            region = app.query_one(plot).region
            assert region.height >= 8 and region.width >= 40, (plot, region)
            assert app.query_one(pane).region.contains_region(region)
            text = region_text(app, plot)
            assert readable_plot(text), text
        await pilot.press("4")
        assert "generated" in region_text(app, "#vorticity") or "no samples" in region_text(
            app, "#vorticity")
        await pilot.press("5")
        assert "gpu-box" in region_text(app, "#workers")
        await pilot.press("1")
        assert app.query_one("#runs-table").region.height >= 8


@sync
async def test_medium_terminal_shares_one_slot_between_runtime_and_vorticity(seeds):
    home, db, _ = seeds
    app = make_app(db, home)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        shown = lambda name: bool(app.query_one(f"#{name}").region)  # noqa: E731
        assert shown("runs") and shown("curves") and shown("runtime") and shown("workers")
        assert not shown("vorticity")
        await pilot.press("4")
        await pilot.pause()
        assert shown("vorticity") and not shown("runtime") and shown("curves")
        await pilot.press("3")
        await pilot.pause()
        assert shown("runtime") and not shown("vorticity")


# ----------------------------------------------------------------------------- snapshots


@pytest.fixture
def fixed_app(tmp_path):
    home, url = fixed_workspace(tmp_path)
    db = open_database(url)
    yield make_app(db, home)
    db.dispose()


@pytest.fixture
def seeds_app(seeds):
    home, db, _ = seeds
    return make_app(db, home)


@pytest.fixture
def ascii_app(seeds):
    home, db, _ = seeds
    return make_app(db, home, ascii=True)


async def _press(pilot, *keys: str) -> None:
    await settle(pilot)
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


def test_snapshot_grouped_band(seeds_app, snap_compare):
    """Grouped: AdamW's and Muon's seeds as mean lines with filled ±std bands."""
    assert snap_compare(seeds_app, terminal_size=(160, 48),
                        run_before=lambda p: _press(p, "g", "space", "down"))


def test_snapshot_smoothing(seeds_app, snap_compare):
    """EMA 0.9 over the raw curve drawn faint, a marked run overlaid, the reference grey."""
    assert snap_compare(seeds_app, terminal_size=(120, 40),
                        run_before=lambda p: _press(p, "down", "down", "down", "space",
                                                    "down", "m"))


def test_snapshot_log_x_by_epoch(seeds_app, snap_compare):
    """Log-x against epochs, on the curves tab of a small terminal."""
    assert snap_compare(seeds_app, terminal_size=(80, 24),
                        run_before=lambda p: _press(p, "2", "x", "t", "t"))


def test_snapshot_t_bins(seeds_app, snap_compare):
    """The fixed-noise loss per t-bin of each setting, mean ± std over seeds."""
    assert snap_compare(seeds_app, terminal_size=(160, 48),
                        run_before=lambda p: _press(p, "g", "space", "down", "b"))


def test_snapshot_ascii(ascii_app, snap_compare):
    """--ascii: markers instead of braille, bands of dots, the reference as `=`."""
    assert snap_compare(ascii_app, terminal_size=(80, 24),
                        run_before=lambda p: _press(p, "g", "space", "down", "2"))


def test_snapshot_medium_layout(fixed_app, snap_compare):
    """120×40: runs and curves on top, runtime (with a usable plot) and workers below."""
    assert snap_compare(fixed_app, terminal_size=(120, 40), run_before=settle)
