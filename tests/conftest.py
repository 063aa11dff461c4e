"""Shared fixtures: a preset whose data generate with the real solver in about a second.

Every test process, and every diffbench process a test starts, runs torch on one thread:
the suite's sizes gain nothing from a second one, and on a loaded machine (or beside a
worker subprocess) OpenMP threads spinning at each operation's barrier made single tests
minutes slower.
"""

from __future__ import annotations

import os

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported; subprocesses inherit it

import pytest

from diffbench.engine.config import Preset, load_preset, override


@pytest.fixture(scope="session")
def quick_preset() -> Preset:
    """`tiny` shrunk to 10 trajectories (8/1/1) of 5 states at 16², simulated 3 at a time."""
    return override(load_preset("tiny"), {
        "data.size": 32, "data.trajectories": 10, "data.transitions": 8, "data.burn_in": 3,
        "data.chunk": 3,
    })
