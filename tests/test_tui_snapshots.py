"""SVG snapshots of the dashboard's main screen (pytest-textual-snapshot), from a hand-made
database with fixed times and values and a pinned clock, so every run draws the same.
Update after an intended change: pytest tests/test_tui_snapshots.py --snapshot-update."""

from __future__ import annotations

import pytest

from diffbench.storage.db import open_database
from diffbench.storage.workspace import Workspace
from diffbench.tui.dashboard.app import DashboardApp, DashboardOptions
from tests.tui_db import LOCATION, NOW, fixed_workspace, settle


@pytest.fixture
def app(tmp_path):
    home, url = fixed_workspace(tmp_path)
    db = open_database(url)
    yield DashboardApp(db, Workspace.resolve(home), DashboardOptions(
        refresh_s=3600, clock=lambda: NOW, location=LOCATION))
    db.dispose()


def test_main_screen_80x24(app, snap_compare):
    """Over SSH: the runs tab, with the tab bar and the key footer."""
    assert snap_compare(app, terminal_size=(80, 24), run_before=settle)


def test_main_screen_160x48(app, snap_compare):
    """A large terminal: runs, curves, runtime, workers and vorticity side by side."""
    assert snap_compare(app, terminal_size=(160, 48), run_before=settle)
