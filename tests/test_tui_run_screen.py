"""The run screen (enter on a run in the dashboard) through Textual's pilot: real SQLite
databases with runs a real worker trained (done) or failed, and one run written through
storage's API with fixed values for the SVG snapshot. Its reads take one run, by index."""

from __future__ import annotations

import datetime as dt
import io
import re
import shutil

import numpy as np
import pytest
import sqlalchemy as sa
from rich.console import Console
from textual.widgets import DataTable

from diffbench.engine.config import load_preset
from diffbench.engine.run_config import RunConfig
from diffbench.engine.vocabulary import QUALITY_SCORES
from diffbench.storage import queue, records, workers
from diffbench.storage.db import open_database
from diffbench.storage.runs import RunSpec
from diffbench.storage.workspace import Workspace
from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions
from diffbench.tui.dashboard.run_details import RunDetailsReader, events
from diffbench.tui.dashboard.run_screen import RunScreen
from tests.tui_db import LOCATION, NOW, fixed_workspace, settle, sync, trained_workspace

WIDE = (160, 48)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workspace(tmp_path_factory.getbasetemp() / "tui-trained")


@pytest.fixture(scope="module")
def failed(trained, tmp_path_factory):
    """A copy of the trained workspace's database plus a run the real worker failed (its
    preset file is gone): (home, database, the failed run's id)."""
    from diffbench.tui.runner.worker import Worker

    home = tmp_path_factory.mktemp("tui-failed")
    shutil.copy(trained.home / "diffbench.db", home / "diffbench.db")
    db = open_database(f"sqlite:///{home / 'diffbench.db'}")
    run_id = queue.enqueue(db, [RunSpec(preset=str(home / "gone.toml"), optimizer="sgd",
                                        schedule="linear", lr=1e-2, weight_decay=0.0, seed=0,
                                        epochs=2)]).ids[0]
    Worker(db, Workspace.resolve(home), device="cpu", lease_s=30.0,
           runs=[run_id]).serve(max_runs=1)
    yield home, db, run_id
    db.dispose()


def make_app(db, home, **options) -> DashboardApp:
    return DashboardApp(db, Workspace.resolve(home), DashboardOptions(**options))


async def open_run(pilot, run_id: int) -> RunScreen:
    """Put the table's cursor on ``run_id``, press enter, wait for the screen's reads."""
    await settle(pilot)
    table = pilot.app.query_one("#runs-table", DataTable)
    table.move_cursor(row=table.get_row_index(str(run_id)))
    await settle(pilot)
    await pilot.press("enter")
    return await settle_run(pilot)


async def settle_run(pilot, timeout: float = 60.0) -> RunScreen:
    """Wait until the run screen has applied its read and the preview it shows."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await pilot.pause()
        screen = pilot.app.screen
        if isinstance(screen, RunScreen) and screen.details and not screen._reading:
            d = screen.details
            if not d.frames or d.frames[screen._index(screen.frame, d)].sample_id \
                    in screen.images:
                await pilot.pause()
                return screen
        await pilot.pause(0.01)
    raise AssertionError(f"the run screen kept reading for {timeout} s")


def section_text(screen: RunScreen, name: str) -> str:
    """A section's whole content as plain text (scrolled into view or not)."""
    section = screen.query_one(f"#section-{name}")
    console = Console(width=section.content_region.width or 76, color_system=None,
                      file=io.StringIO(), legacy_windows=False)
    console.print(section.make(console.width))
    return console.file.getvalue()


# ----------------------------------------------------------------------------- screen


@sync
async def test_enter_opens_a_done_run_and_esc_returns(trained):
    db = open_database(trained.url)
    try:
        app = make_app(db, trained.home)
        run = queue.get_run(db, trained.done[0])
        async with app.run_test(size=WIDE) as pilot:
            await settle(pilot)
            await pilot.press("enter")  # the first run is selected
            screen = await settle_run(pilot)
            assert screen.run_id == run.id
            header = str(screen.query_one("#run-header").render())
            assert f"run #{run.id}" in header and "✓ done" in header and "adamw" in header
            losses = section_text(screen, "losses")
            summary = run.summary
            assert f"{summary['final_fixed_valid_loss']:.4g}" in losses
            assert f"{summary['final_valid_loss']:.4g}" in losses
            assert "fixed-noise" in losses and ".99–1" in losses  # the t-bins
            steps = section_text(screen, "steps")
            for key in ("data_ms", "compute_ms", "optimizer_ms"):
                assert f"{summary[key]:.4g}" in steps  # the database's rows = the summary
            assert f"mean of {summary['steps']}" in steps
            quality = section_text(screen, "quality")
            for score in QUALITY_SCORES:
                assert score.header in quality
            sampler = summary["quality"]["sampler"]
            assert f"steps {sampler['steps']}" in quality and "tau 0.5" in quality
            config = section_text(screen, "config")
            assert "optimizer adamw" in config and "precision fp32" in config
            assert "[model]" in config and "channels [8, 16]" in config
            provenance = section_text(screen, "provenance")
            commit = run.provenance["git_commit"]  # None outside a git checkout
            assert (f"git {commit[:10]}" if commit else "not a git checkout") in provenance
            assert f"torch     {run.provenance['torch']}" in provenance
            assert f"{run.provenance['parameters']:,} parameters" in provenance
            log = section_text(screen, "events")
            assert "queued" in log and "claimed by worker" in log and "attempt 1" in log
            assert "finished: done" in log
            assert not screen.query_one("#section-traceback").display
            await pilot.press("escape")
            assert not isinstance(app.screen, RunScreen)
            assert app.focused is app.query_one("#runs-table")
            await pilot.press("enter")
            await settle_run(pilot)
            await pilot.press("q")  # q goes back too; the dashboard's q then quits
            assert not isinstance(app.screen, RunScreen)
            await pilot.press("q")
        assert app.return_code == 0
    finally:
        db.dispose()


@sync
async def test_a_failed_run_shows_its_traceback(failed):
    home, db, run_id = failed
    run = queue.get_run(db, run_id)
    assert run.status == "failed" and run.traceback
    app = make_app(db, home)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_run(pilot, run_id)
        box = screen.query_one("#section-traceback")
        assert box.display and box.region.y < 10  # first, at the top of the screen
        assert "PresetError" in box.border_title
        text = section_text(screen, "traceback")
        assert "Traceback (most recent call last)" in text
        assert "gone.toml" in text and "worker.py" in text
        assert "✗ failed" in str(screen.query_one("#run-header").render())
        assert "finished: failed: PresetError" in section_text(screen, "events")
        assert "not resolved yet" in section_text(screen, "config")
        assert "none yet" in section_text(screen, "provenance")


@sync
async def test_previews_scrub_across_the_stored_epochs(trained):
    db = open_database(trained.url)
    try:
        app = make_app(db, trained.home, ascii=True)
        async with app.run_test(size=WIDE) as pilot:
            screen = await open_run(pilot, trained.done[1])
            assert [(f.name, f.epoch) for f in screen.details.frames] == [
                ("vorticity", 0), ("vorticity", 1), ("quality", 2)]
            latest = section_text(screen, "previews")
            assert latest.startswith("2/3 generated after epoch 2 (step 4)")
            assert "validation (tuiquick-" in latest
            await pilot.press("left")
            await settle_run(pilot)
            first = section_text(screen, "previews")
            assert first.startswith("1/3 generated after epoch 1 (step 2)")
            generated = [t.split("validation")[0] for t in (first, latest)]
            assert generated[0] != generated[1]  # another epoch's samples
            await pilot.press("left")  # stays at the first
            assert section_text(screen, "previews").startswith("1/3")
            await pilot.press("right", "right")
            await settle_run(pilot)
            scored = section_text(screen, "previews")
            assert scored.startswith("3/3 scored by the quality assessment")
            assert "test data it was scored against" in scored
            assert set(screen.images) == {f.sample_id for f in screen.details.frames}
            await pilot.press("left")  # kept: shown without a read
            assert section_text(screen, "previews").startswith("2/3")
    finally:
        db.dispose()


@sync
async def test_80x24_one_column_scrolls_to_sections_and_previews(trained):
    db = open_database(trained.url)
    try:
        app = make_app(db, trained.home)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_run(pilot, trained.done[0])
            body = screen.query_one("#run-body")
            assert screen.has_class("narrow") and body.scroll_y == 0
            left, right = screen.query_one("#run-left"), screen.query_one("#run-right")
            assert right.region.y > left.region.y  # stacked: one column
            await pilot.press("tab", "tab")  # losses, then step time, at the top
            await pilot.pause()
            steps = screen.query_one("#section-steps")
            assert steps.region.y == screen.query_one("#run-body").region.y
            await pilot.press("right")
            await settle_run(pilot)
            previews = screen.query_one("#section-previews")
            assert previews.region.y == body.region.y  # scrolled to the previews
            await pilot.press("escape")
            assert not isinstance(app.screen, RunScreen)
    finally:
        db.dispose()


@sync
async def test_a_training_run_updates_as_its_worker_writes(tmp_path):
    """The fixed database's running run: new steps show on the next read, read past the
    screen's cursor; a resume that rewrites its steps is read again from scratch."""
    home, url = fixed_workspace(tmp_path)
    db = open_database(url)
    try:
        running = next(r for r in queue.list_runs(db) if r.status == "running")
        app = make_app(db, home, refresh_s=3600, clock=lambda: NOW)
        async with app.run_test(size=WIDE) as pilot:
            screen = await open_run(pilot, running.id)
            assert "mean of 40" in section_text(screen, "steps")
            log = section_text(screen, "events")
            assert "last heartbeat, 5 s ago" in log
            records.add_step_metrics(db, running.id, [{
                "step": 41, "epoch": 2, "loss": 0.5, "lr": 1e-3, "grad_norm": 1.0,
                "data_ms": 1.0, "compute_ms": 20.0, "optimizer_ms": 15.0}])
            screen.refresh_data()
            await settle_run(pilot)
            assert "mean of 41" in section_text(screen, "steps")
            assert screen.reader._sums.count == 41
            assert "0.5" in section_text(screen, "losses")  # the last step's loss
            records.truncate_metrics(db, running.id, 20)  # a resume from step 20
            screen.refresh_data()
            await settle_run(pilot)
            assert "mean of 20" in section_text(screen, "steps")
    finally:
        db.dispose()


# ----------------------------------------------------------------------------- details


def test_events_follow_release_requeue_and_resume(trained, tmp_path):
    shutil.copy(trained.home / "diffbench.db", tmp_path / "diffbench.db")
    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    try:
        def log(run_id: int) -> str:
            return "\n".join(e.text for e in events(RunDetailsReader(db, run_id).refresh()))

        run_id = trained.queued
        assert "waiting for a worker" in log(run_id)
        a = workers.register_worker(db, host="node-a", pid=11, device="cuda:0")
        queue.claim_next(db, a.id, lease_s=60)
        queue.record_start(db, run_id, a.id, provenance={"device": "cuda:0",
                                                         "device_name": "H100",
                                                         "worker_id": a.id, "host": "node-a"})
        assert "claimed by worker" in log(run_id) and "on host node-a" in log(run_id)
        assert "last heartbeat" in log(run_id)
        queue.release(db, run_id, a.id, reason=f"worker {a.id} stopped (SIGTERM) at step 7")
        assert f"back in the queue: worker {a.id} stopped (SIGTERM) at step 7" in log(run_id)
        b = workers.register_worker(db, host="node-b", pid=12, device="cuda:1",
                                    slurm_job="77_3")
        queue.claim_next(db, b.id, lease_s=60)
        text = log(run_id)
        assert "first claimed (attempt 1)" in text
        assert "1 attempt before the last ended unfinished" in text
        assert f"worker {b.id} on host node-b (pid 12, cuda:1, slurm 77_3), attempt 2: " \
               "resumed from its last checkpoint" in text
        later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        queue.requeue_stale(db, now=later)  # the lease expired: worker b was lost
        assert "back in the queue:" in log(run_id)
        queue.cancel(db, [run_id])
        assert log(run_id).endswith("cancelled while in the queue")
    finally:
        db.dispose()


def test_the_screens_reads_search_indexes_only(trained, tmp_path):
    """Every query of a refresh uses the primary key or a (run_id, id) index: no scan of a
    metric table, whatever its size."""
    shutil.copy(trained.home / "diffbench.db", tmp_path / "diffbench.db")
    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    statements: list[tuple[str, object]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    try:
        sa.event.listen(db.engine, "before_cursor_execute", record)
        reader = RunDetailsReader(db, trained.done[0])
        assert reader.refresh() is not None
        assert reader.refresh() is None  # a finished run: nothing new, nothing read again
        sa.event.remove(db.engine, "before_cursor_execute", record)
        plans = []
        with db.engine.connect() as conn:
            for statement, parameters in statements:
                plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                plans.append(" / ".join(row[-1] for row in plan))
        metric_plans = [p for p in plans if re.search(r"step_metrics|epoch_metrics|samples|runs",
                                                      p)]
        assert metric_plans
        scans = [p for p in metric_plans if re.search(r"\bSCAN (step_metrics|epoch_metrics|"
                                                      r"samples|runs)\b", p)]
        assert scans == [], plans
    finally:
        db.dispose()


# ----------------------------------------------------------------------------- snapshot


def _field(size: int, phase: float) -> np.ndarray:
    x = np.linspace(0, 2 * np.pi, size, endpoint=False)
    return (np.sin(4 * x[:, None] + phase) * np.cos(x[None, :] - 2 * phase)).astype(np.float32)


def _at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def add_finished_run(db) -> int:
    """A Muon run with everything the screen shows, written through storage's API with
    fixed values: released once by its first worker and resumed by another, four epochs,
    per-t-bin losses, previews, sample quality (a NaN score among them)."""
    config = RunConfig(preset=load_preset("tiny"), optimizer="muon", lr=0.02,
                       weight_decay=0.0, schedule="cosine", seed=3, device="cuda",
                       precision="bf16").to_dict()
    run_id = queue.enqueue(db, [RunSpec(preset="tiny", optimizer="muon", schedule="cosine",
                                        lr=0.02, weight_decay=0.0, seed=3, epochs=4,
                                        config=config, tags=("sweep-7",))],
                           now=_at(-7200)).ids[0]
    first = workers.register_worker(db, host="node-3", pid=311, device="cuda:0",
                                    slurm_job="4120_3", now=_at(-7000))
    second = workers.register_worker(db, host="node-5", pid=512, device="cuda:0",
                                     now=_at(-5000))
    edges = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99, 1.0]
    provenance = {"diffbench": "0.1.0", "git_commit": "3f9c2e1d0b7a65c4e3d2f1a0b9c8d7e6f5a4b3c2",
                  "git_dirty": True, "torch": "2.5.1+cu124", "cuda": "12.4",
                  "python": "3.11.7", "platform": "Linux-5.15.0-x86_64-with-glibc2.35",
                  "device": "cuda:0", "device_name": "NVIDIA H100 80GB HBM3", "threads": 16,
                  "parameters": 1_204_330, "optimizer_implementation": "batched",
                  "packages": {"schedulefree": "1.4.1", "prodigyopt": "1.1.2",
                               "pytorch_optimizer": "4.1.0"},
                  "compile": True, "cuda_graph": False, "compile_s": 41.5, "loss_bins": edges,
                  "data": {"path": "/scratch/diffbench/data/tiny.h5",
                           "checksum": "9a1f3c7be0d24b6a8f1e2d3c4b5a69788796a5b4"}}
    steps = [{"step": s, "epoch": (s - 1) // 16, "loss": 0.08 + 1.0 / (1 + s / 6),
              "lr": 0.02, "grad_norm": 1.0, "data_ms": 0.4, "compute_ms": 11.0 + (s % 4),
              "optimizer_ms": 3.0 + (s % 2)} for s in range(1, 65)]
    claimed = queue.claim_next(db, first.id, lease_s=600, now=_at(-6900), ids=[run_id])
    assert claimed is not None and claimed.id == run_id
    queue.record_start(db, run_id, first.id, provenance={**provenance, "host": "node-3",
                                                         "pid": 311, "worker_id": first.id},
                       config=config)
    records.add_step_metrics(db, run_id, steps[:20])
    queue.release(db, run_id, first.id, reason=f"worker {first.id} stopped (SIGTERM) at step 20",
                  now=_at(-6000))
    assert queue.claim_next(db, second.id, lease_s=600, now=_at(-4900), ids=[run_id])
    queue.record_start(db, run_id, second.id, provenance={**provenance, "host": "node-5",
                                                          "pid": 512, "worker_id": second.id},
                       config=config)
    records.truncate_metrics(db, run_id, 16)
    records.add_step_metrics(db, run_id, steps[16:])
    records.add_epoch_metrics(db, run_id, [
        {"epoch": e, "step": 16 * (e + 1), "train_loss": 0.1 + 0.6 / (e + 1),
         "valid_loss": 0.11 + 0.6 / (e + 1), "fixed_valid_loss": 0.105 + 0.6 / (e + 1),
         "epoch_s": 0.4, "valid_s": 0.1, "sample_s": 0.2, "train_s": 0.25 * (e + 1),
         "fixed_valid_bins": [round(0.02 + 0.09 * i + 0.3 / (e + 1), 4) for i in range(8)]}
        for e in range(4)])
    for e in range(4):
        records.add_sample(db, run_id, epoch=e, step=16 * (e + 1), array=np.stack(
            [_field(16, 0.3 * t + 0.5 * e) for t in range(5)])[None])
    for name, phase in (("quality", 1.0), ("quality-data", 0.0)):
        records.add_sample(db, run_id, epoch=4, step=64, name=name, array=np.stack(
            [_field(16, 0.6 * t + phase) for t in range(5)])[None])
    quality = {"std_ratio": 0.94, "mean_flow": 0.012, "spectrum_error": 0.21,
               "vorticity_w1": 0.083, "divergence_ratio": 1.07, "dynamics_error": float("nan"),
               "unstable_fraction": 0.25, "lag1_autocorrelation": 0.912,
               "sin4y_amplitude": 0.71, "trajectories": 4, "length": 6, "seconds": 18.4,
               "sampler": {"steps": 32, "corrections": 1, "tau": 0.5, "t_start": 1.0,
                           "remove_mean": False},
               "floor": {"std_ratio": 0.99, "mean_flow": 0.001, "spectrum_error": 0.05,
                         "vorticity_w1": 0.02, "divergence_ratio": 1.0, "dynamics_error": 1.01}}
    queue.finish(db, run_id, second.id, "done", steps_done=64, now=_at(-3000), summary={
        "status": "done", "message": "4 epochs", "steps": 64, "epochs": 4,
        "final_fixed_valid_loss": 0.255, "loss_bins": edges, "quality": quality})
    return run_id


@pytest.fixture
def snapshot_app(tmp_path):
    home, url = fixed_workspace(tmp_path)
    db = open_database(url)
    run_id = add_finished_run(db)
    app = make_app(db, home, refresh_s=3600, clock=lambda: NOW, location=LOCATION)
    yield app, run_id
    db.dispose()


def test_run_screen_120x40(snapshot_app, snap_compare):
    """A finished run: losses with t-bins, step time, events, config | previews, quality."""
    app, run_id = snapshot_app

    async def run_before(pilot) -> None:
        await open_run(pilot, run_id)

    assert snap_compare(app, terminal_size=(120, 40), run_before=run_before)
