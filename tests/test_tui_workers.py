"""The workers pane with the load the heartbeats carry, through Textual's pilot: a GPU
worker (utilisation, memory, temperature, a sparkline of its history), a CUDA worker whose
GPU has no sensor, a CPU worker and one not heard from with a load yet; wide (one column
per reading) and narrow (the load under each worker); an SVG snapshot of each."""

from __future__ import annotations

import datetime as dt

import pytest

from diffbench.storage import queue, workers
from diffbench.storage.db import open_database
from diffbench.storage.workers import KEEP_LOAD, LoadSample
from diffbench.storage.workspace import Workspace
from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions
from tests.tui_db import LOCATION, NOW, region_text, settle, sync

GIB = 2**30


def at(seconds: float) -> dt.datetime:
    return NOW + dt.timedelta(seconds=seconds)


def load_workspace(root):
    """Four workers with fixed heartbeats and loads (a worker's samples are written with
    its heartbeats, through `queue.heartbeat`, as a worker writes them)."""
    home = root / "load-home"
    url = f"sqlite:///{home / 'diffbench.db'}"
    db = open_database(url)
    try:
        gpu = workers.register_worker(db, host="gpu-box", pid=11, device="cuda:0", now=at(-900))
        blind = workers.register_worker(db, host="mig-node", pid=12, device="cuda:0",
                                        now=at(-900))
        cpu = workers.register_worker(db, host="laptop", pid=13, device="cpu", now=at(-900))
        workers.register_worker(db, host="new-node", pid=14, device="cuda:1", now=at(-2))
        for k in range(KEEP_LOAD + 5):  # more than are kept: the oldest go
            t = at(-20 * (KEEP_LOAD + 5 - k))
            queue.heartbeat(db, gpu.id, now=t, load=LoadSample(
                gpu_util=float((k * 37) % 101), gpu_memory_used=int((40 + k % 7) * GIB),
                gpu_memory_total=80 * GIB, gpu_temp=55.0 + k % 10, cpu_percent=10.0 + k,
                ram_used=12 * GIB, ram_total=64 * GIB))
            queue.heartbeat(db, blind.id, now=t, load=LoadSample(
                cpu_percent=50.0, ram_used=3 * GIB, ram_total=16 * GIB))
            queue.heartbeat(db, cpu.id, now=t, load=LoadSample(
                cpu_percent=float(k * 3 % 100), ram_used=2 * GIB, ram_total=8 * GIB))
    finally:
        db.dispose()
    return home, url


@pytest.fixture
def app(tmp_path):
    home, url = load_workspace(tmp_path)
    db = open_database(url)
    yield DashboardApp(db, Workspace.resolve(home), DashboardOptions(
        refresh_s=3600, clock=lambda: NOW, location=LOCATION))
    db.dispose()


def test_only_the_last_samples_are_kept(tmp_path):
    _, url = load_workspace(tmp_path)
    db = open_database(url)
    try:
        history = workers.load_history(db)
    finally:
        db.dispose()
    assert sorted(history) == [1, 2, 3]  # the new worker has none yet
    gpu = history[1]
    assert len(gpu) == KEEP_LOAD
    assert [s.cpu_percent for s in gpu] == [10.0 + k for k in range(5, KEEP_LOAD + 5)]
    assert gpu[-1].at == at(-20).replace(tzinfo=dt.UTC)
    blind = history[2][-1]  # absent sensors stay absent, not zero
    assert (blind.gpu_util, blind.gpu_memory_used, blind.gpu_temp) == (None, None, None)
    assert not blind.has_gpu and gpu[-1].has_gpu


@sync
async def test_wide_pane_shows_each_reading_with_its_history(app):
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        text = region_text(app, "#workers")
        views = {w.host: w for w in app.snapshot.workers}
    assert len(views["gpu-box"].load) == KEEP_LOAD and views["new-node"].load == ()
    lines = {host: next(line for line in text.splitlines() if f" {host} " in line)
             for host in views}
    last = views["gpu-box"].load[-1]
    assert f"{last.gpu_util:.0f}%" in lines["gpu-box"]
    assert f"{last.gpu_memory_used / GIB:.1f}/80G" in lines["gpu-box"]
    assert f"{last.gpu_temp:.0f}°C" in lines["gpu-box"] and "12.0/64G" in lines["gpu-box"]
    assert any(c in lines["gpu-box"] for c in "▁▂▃▄▅▆▇█")  # the sparkline
    assert "no GPU sensor" in lines["mig-node"] and "50%" in lines["mig-node"]
    assert "no GPU sensor" not in lines["laptop"] and "2.0/8G" in lines["laptop"]
    assert "no GPU sensor" not in lines["new-node"]
    assert lines["new-node"].count("—") >= 6  # no sample yet: every reading absent


@sync
async def test_narrow_pane_puts_the_load_under_each_worker(app):
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        text = region_text(app, "#workers")
    assert "gpu-box" in text and "mig-node" in text and "cuda:0" in text
    assert "gpu: no GPU sensor" in text and "no load reported yet" in text
    gpu_line = next(line for line in text.splitlines() if "°C" in line)
    assert gpu_line.strip().startswith("gpu ") and "/80G" in gpu_line
    assert "cpu " in text and "ram 12.0/64G" in text


def test_snapshot_workers_wide(app, snap_compare):
    """160×48: the workers pane with one column per reading and sparklines."""
    assert snap_compare(app, terminal_size=(160, 48), run_before=settle)


def test_snapshot_workers_narrow(app, snap_compare):
    """80×24, the workers tab: each worker's load on the lines under it."""
    async def show(pilot):
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)

    assert snap_compare(app, terminal_size=(80, 24), run_before=show)
