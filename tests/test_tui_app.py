"""`diffbench tui` driven through Textual's pilot against real databases: one written by
a real worker (two tiny runs), one hand-made with fixed values (grouping, dead workers)."""

from __future__ import annotations

import csv
import shutil
import statistics
from pathlib import Path

import pytest
from textual.widgets import DataTable, Input

from diffbench.storage import queue, records
from diffbench.storage.db import open_database
from diffbench.storage.workspace import Workspace
from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions
from diffbench.tui.dashboard.curves_pane import CurvesPane
from diffbench.tui.dashboard.dialogs import HelpScreen
from diffbench.tui.dashboard.state import DashboardReader
from tests.tui_db import (
    BRAILLE,
    NOW,
    fixed_workspace,
    region_text,
    screen_text,
    settle,
    sync,
    trained_workspace,
)

WIDE = (160, 48)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workspace(tmp_path_factory.getbasetemp() / "tui-trained")


@pytest.fixture
def copy(trained, tmp_path):
    """A private copy of the trained workspace's database, for tests that write."""
    shutil.copy(trained.home / "diffbench.db", tmp_path / "diffbench.db")
    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    home, url = fixed_workspace(tmp_path_factory.mktemp("tui-fixed"))
    db = open_database(url)
    yield home, db
    db.dispose()


def make_app(db, home: Path, **options) -> DashboardApp:
    return DashboardApp(db, Workspace.resolve(home), DashboardOptions(**options))


def table_rows(app) -> list[list[str]]:
    table = app.query_one("#runs-table", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def ids(app) -> list[int]:
    return [int(row[0].lstrip("● ")) for row in table_rows(app)]


# ----------------------------------------------------------------------------- panes


@sync
async def test_every_pane_shows_the_worker_runs(trained):
    db = open_database(trained.url)
    try:
        app = make_app(db, trained.home)
        async with app.run_test(size=WIDE) as pilot:
            await settle(pilot)
            text = screen_text(app)
            rows = {int(r[0]): r for r in table_rows(app)}
            assert set(rows) == {*trained.done, trained.queued}
            for run_id, name in zip(trained.done, ("adamw", "muon"), strict=True):
                row = rows[run_id]
                assert row[1] == "✓ done" and row[2] == name and "2/2" in row[7]
                assert float(row[8]) > 0 and float(row[9]) > 0 and float(row[10]) > 0
            assert rows[trained.queued][1] == "○ queued" and rows[trained.queued][8] == "—"
            assert "✓ 2 done" in text and "○ 1 queued" in text  # header counts
            # the first run is selected: its curves, step times and samples
            assert app.selected == trained.done[0]
            assert "#1" in str(app.query_one("#loss-legend").render())
            # a curve in the loss plot (any braille dots: which ones depends on the data)
            assert BRAILLE & set(region_text(app, "#loss-plot")), text
            assert "ratio to AdamW" in text and "1.00×" in text and "muon" in text
            assert "generated, run #1 after epoch 1" in text
            assert "validation (tuiquick-" in text and "▀" in text
            assert "○ stopped" in text and "cpu" in text  # the worker, gone after its runs
    finally:
        db.dispose()


@sync
async def test_keys_filter_sort_mark_and_toggle(trained):
    db = open_database(trained.url)
    try:
        app = make_app(db, trained.home)
        async with app.run_test(size=WIDE) as pilot:
            await settle(pilot)
            await pilot.press("slash", *"opt:muon")
            assert ids(app) == [trained.done[1]]
            await pilot.press("ctrl+u", *"status:queued,done adam")
            assert ids(app) == [trained.done[0]]
            app.query_one("#filter", Input).value = "nokey:1"
            await pilot.pause()
            assert "unknown key 'nokey'" in screen_text(app)
            assert ids(app) == [trained.done[0]]  # the last valid filter stays
            await pilot.press("escape")
            assert ids(app) == [*trained.done, trained.queued]
            await pilot.press("s")  # by status: done runs after the queued one
            assert app.sort_column == "status" and ids(app)[0] == trained.queued
            await pilot.press("s", "s", "s", "s", "s", "s", "s", "s", "s")  # ms/step
            assert app.sort_column == "ms" and ids(app)[-1] == trained.queued
            await pilot.press("S")
            assert ids(app)[-1] == trained.queued  # unknown values stay last
            await pilot.press("S", "s", "s")  # back to id, ascending
            assert ids(app) == [*trained.done, trained.queued]
            await pilot.press("space", "down")  # mark run 1, select run 2
            await settle(pilot)
            legend = str(app.query_one("#loss-legend").render())
            assert f"#{trained.done[1]} #{trained.done[0]}" in legend
            assert "adamw" in legend and "muon" in legend
            assert "●1" in table_rows(app)[0][0]
            await pilot.press("t")
            assert "vs training time (s)" in screen_text(app)
            await pilot.press("l")
            assert "loss (linear)" in screen_text(app)
            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            assert "status:running" in screen_text(app)
            await pilot.press("escape", "q")
        assert app.return_code == 0
    finally:
        db.dispose()


@sync
async def test_a_new_metric_row_shows_on_the_next_refresh(trained, copy, tmp_path):
    app = make_app(copy, trained.home, refresh_s=60)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        cursor = app.reader._step_cursor
        before = {r.id: r for r in app.snapshot.runs}
        run = trained.done[0]
        last = records.metrics_since(copy, run).steps[-1]
        records.add_step_metrics(copy, run, [{
            "step": last.step + 1, "epoch": last.epoch, "loss": 0.123, "lr": 1e-4,
            "grad_norm": 1.0, "data_ms": 1.0, "compute_ms": 1.0, "optimizer_ms": 1.0}])
        app.refresh_data()
        await settle(pilot)
        assert app.reader._step_cursor == cursor + 1  # read one new row, nothing else
        assert table_rows(app)[0][8] == "0.123"
        after = {r.id: r for r in app.snapshot.runs}
        assert after[run] is not before[run]  # only the changed run's view is new
        assert all(after[i] is before[i] for i in after if i != run)


# ----------------------------------------------------------------------------- state


def test_state_keeps_each_runs_latest_loss_bins(trained, copy):
    """The reader's per-run epoch aggregate holds the latest per-bin losses read from the
    database: the worker's runs their last validation's, a queued run none; a later epoch
    with bins replaces them, one without (no validation) keeps them."""
    reader = DashboardReader(copy)
    views = {v.id: v for v in reader.refresh().runs}
    run = trained.done[0]
    for run_id in trained.done:
        last = records.metrics_since(copy, run_id).epochs[-1]
        assert views[run_id].fixed_valid_bins == last.fixed_valid_bins
        assert len(last.fixed_valid_bins) == len(queue.get_run(copy, run_id).loss_bins) - 1
    assert views[trained.queued].fixed_valid_bins is None
    epoch = records.metrics_since(copy, run).epochs[-1]
    later = {"step": epoch.step + 1, "train_loss": 0.5, "valid_loss": None,
             "fixed_valid_loss": None, "epoch_s": 1.0, "valid_s": 0.0, "sample_s": 0.0,
             "train_s": epoch.train_s + 1}
    bins = tuple(range(1, len(epoch.fixed_valid_bins) + 1))
    records.add_epoch_metrics(copy, run, [{**later, "epoch": epoch.epoch + 1,
                                         "fixed_valid_bins": bins}])
    assert {v.id: v for v in reader.refresh().runs}[run].fixed_valid_bins == bins
    records.add_epoch_metrics(copy, run, [{**later, "epoch": epoch.epoch + 2}])
    assert {v.id: v for v in reader.refresh().runs}[run].fixed_valid_bins == bins


# ----------------------------------------------------------------------------- actions


@sync
async def test_cancel_and_retry_change_the_database(trained, copy):
    app = make_app(copy, trained.home)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("down", "down")  # the queued run
        await settle(pilot)
        assert app.selected == trained.queued
        await pilot.press("c", "n")  # declined: nothing happens
        await app.workers.wait_for_complete()
        assert queue.get_run(copy, trained.queued).status == "queued"
        await pilot.press("c", "y")
        await settle(pilot)
        assert queue.get_run(copy, trained.queued).status == "cancelled"
        assert table_rows(app)[-1][1] == "⊘ cancelled"
        await pilot.press("r", "enter")
        await settle(pilot)
        assert queue.get_run(copy, trained.queued).status == "queued"
        await pilot.press("up", "up", "r", "y")  # a done run cannot be retried: a notice
        await settle(pilot)
        assert queue.get_run(copy, trained.done[0]).status == "done"
        assert any("done" in n.message for n in app._notifications)


@sync
async def test_queue_form_validates_then_queues(trained, copy):
    app = make_app(copy, trained.home)
    before = len(queue.list_runs(copy))
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("a")
        form = app.screen
        form.query_one("#field-preset", Input).value = "tiny"
        form.query_one("#field-optimizers", Input).value = "adamw,muon"
        form.query_one("#field-lrs", Input).value = "-1"
        form.query_one("#field-seeds", Input).value = "0-1"
        form.query_one("#field-preset", Input).focus()
        await pilot.press("enter")
        assert "--lr must be a positive number, got -1.0" in screen_text(app)
        form.query_one("#field-lrs", Input).value = "2e-3"
        form.query_one("#field-optimizers", Input).value = "adamw,nosuch"
        await pilot.press("enter")
        assert "unknown optimizer 'nosuch'" in screen_text(app)
        form.query_one("#field-optimizers", Input).value = "adamw,muon"
        form.query_one("#field-preset", Input).value = "nosuch"
        await pilot.press("enter")
        assert "unknown preset 'nosuch'" in screen_text(app)
        assert len(queue.list_runs(copy)) == before
        form.query_one("#field-preset", Input).value = "tiny"
        await pilot.press("enter")
        assert "Queue 4 run(s) (adamw, muon, preset tiny)?" in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
    new = queue.list_runs(copy)[before:]
    assert [(r.optimizer, r.seed, r.lr) for r in new] == [
        ("adamw", 0, 2e-3), ("adamw", 1, 2e-3), ("muon", 0, 2e-3), ("muon", 1, 2e-3)]
    assert all(r.status == "queued" and r.preset == "tiny" for r in new)


@sync
async def test_export_writes_the_filtered_table_as_csv(trained, copy, tmp_path):
    app = make_app(copy, trained.home, export_dir=tmp_path)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"status:done", "enter", "e")
        assert app.screen.query_one("#export-path", Input).value == str(
            tmp_path / "diffbench-runs.csv")
        await pilot.press("enter")
        await settle(pilot)
    with (tmp_path / "diffbench-runs.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [int(r["id"]) for r in rows] == list(trained.done)
    assert {r["optimizer"] for r in rows} == {"adamw", "muon"}
    assert all(float(r["final_fixed_valid_loss"]) > 0 for r in rows)


@sync
async def test_read_only_disables_the_actions(trained, copy):
    app = make_app(copy, trained.home, read_only=True)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("down", "down", "c", "y", "a", "e")
        await settle(pilot)
        assert "read-only" in screen_text(app)
        assert app.screen is app.screen_stack[0]  # no dialog opened
    assert queue.get_run(copy, trained.queued).status == "queued"


# ----------------------------------------------------------------------------- fixed DB


@sync
async def test_group_by_optimizer_gives_mean_and_std_over_seeds(fixed):
    home, db = fixed
    app = make_app(db, home, clock=lambda: NOW)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        await pilot.press("g")
        rows = {r[1]: r for r in table_rows(app)}
    finals = [e.fixed_valid_loss for run_id in (1, 2)
              for e in records.metrics_since(db, run_id).epochs[-1:]]
    adamw = rows["adamw"]
    assert adamw[0].startswith("tiny·") and adamw[5] == "2" and adamw[6] == "2"
    mean, std = adamw[7].split(" ± ")
    assert float(mean) == pytest.approx(statistics.fmean(finals), rel=1e-3)
    assert float(std) == pytest.approx(statistics.stdev(finals), rel=1e-2)
    assert rows["soap"][7] == "—"  # running: no final loss yet


def test_groups_keep_presets_and_epochs_apart_and_one_seed_has_no_std():
    """The report's setting: the same optimizer, schedule, lr and wd on another preset or
    for other epochs is another group (they used to be mixed); one seed gives no std."""
    from diffbench.tui.dashboard.state import RunView, group_runs

    def run(id_: int, preset: str, epochs: int, seed: int, final: float) -> RunView:
        return RunView(id=id_, status="done", preset=preset, optimizer="adamw",
                       schedule="linear", lr=1e-3, wd=0.01, seed=seed, epochs_done=epochs,
                       epochs_total=epochs, progress=1.0, steps=10, train_loss=final,
                       valid_loss=final, final_loss=final, ms_per_step=5.0, eta_s=None,
                       device="cpu", worker_id=None)

    groups = group_runs([run(1, "tiny", 4, 0, 0.2), run(2, "tiny", 4, 1, 0.4),
                         run(3, "tiny", 8, 0, 0.1), run(4, "demo", 4, 0, 0.05)])
    assert [(g.preset, g.epochs, g.run_ids) for g in groups] == [
        ("demo", 4, (4,)), ("tiny", 8, (3,)), ("tiny", 4, (1, 2))]
    assert groups[2].mean == pytest.approx(0.3) and groups[2].std == pytest.approx(0.1414, 1e-3)
    assert groups[0].std is None and groups[1].std is None


@sync
async def test_workers_pane_shows_a_dead_worker_as_dead(fixed):
    home, db = fixed
    app = make_app(db, home, clock=lambda: NOW)
    async with app.run_test(size=WIDE) as pilot:
        await settle(pilot)
        text = screen_text(app)
    assert "● alive" in text and "#4" in text and "5s ago" in text
    assert "✗ dead" in text and "6m40s ago" in text


@sync
async def test_small_terminal_shows_one_pane_per_tab(fixed):
    home, db = fixed
    app = make_app(db, home, clock=lambda: NOW, ascii=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.query_one("#runs-table").display and "1 runs" in screen_text(app)
        table = app.query_one("#runs-table", DataTable)  # less important columns left out
        assert [str(c.label).split()[0] for c in table.columns.values()] == [
            "id", "status", "optimizer", "progress", "train", "valid", "ms/step", "ETA"]
        assert table.virtual_size.width <= table.scrollable_content_region.width
        await pilot.press("2")
        assert app.query_one(CurvesPane).region.width == 80
        assert not app.query_one("#runs").region
        await pilot.press("4")
        text = screen_text(app)
        assert "generated, run #1" in text and "▀" not in text
        assert any(ch in text for ch in "@#*+") and any(ch in text for ch in "Oo=~")


@sync
async def test_empty_database_says_what_to_do(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        app = make_app(db, tmp_path)
        async with app.run_test(size=WIDE) as pilot:
            await settle(pilot)
            text = screen_text(app)
    finally:
        db.dispose()
    assert "no runs yet" in text and "diffbench queue add" in text
    assert "no workers yet" in text and "diffbench worker" in text
    assert "no run selected" in text


def test_cli_rejects_a_bad_refresh_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from diffbench.tui.cli import app as cli
    from tests.cli_checks import assert_one_line_error

    result = CliRunner(env={"NO_COLOR": "1"}).invoke(
        cli, ["--home", str(tmp_path), "tui", "--refresh", "0"])
    assert_one_line_error(result, "--refresh must be positive")
    assert not (tmp_path / "diffbench.db").exists()
