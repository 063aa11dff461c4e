"""Shared fixtures: a preset whose data generate with the real solver in about a second."""

from __future__ import annotations

import pytest

from diffbench.engine.config import Preset, load_preset, override


@pytest.fixture(scope="session")
def quick_preset() -> Preset:
    """`tiny` shrunk to 10 trajectories (8/1/1) of 5 states at 16², simulated 3 at a time."""
    return override(load_preset("tiny"), {
        "data.size": 32, "data.trajectories": 10, "data.transitions": 8, "data.burn_in": 3,
        "data.chunk": 3,
    })
