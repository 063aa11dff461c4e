"""Shared fixtures: a preset whose data generate with the real solver in about a second, and
the device the device-taking tests train on.

Every test process, and every diffbench process a test starts, runs torch on one thread:
the suite's sizes gain nothing from a second one, and on a loaded machine (or beside a
worker subprocess) OpenMP threads spinning at each operation's barrier made single tests
minutes slower.

``--device cuda`` (or ``cuda:N``) runs the tests that take the `device` fixture (trainer,
worker, `diffbench train`, sample quality) on a GPU, so a GPU machine checks the CUDA paths
(compilation, CUDA graphs) the CPU never takes; every other test runs as on the CPU.
Helper functions and constants shared by several modules are in helpers.py.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterator
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported; subprocesses inherit it

import pytest

from diffbench.engine.config import Preset, load_preset, override
from diffbench.storage.db import Database, open_database
from tests.postgres_db import KINDS, database_url


def _device_option(value: str) -> str:
    """`cpu`, `cuda` or `cuda:N`; anything else is a usage error before any test runs."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise argparse.ArgumentTypeError(f"takes cpu, cuda or cuda:N, not {value!r}")
    return value


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", type=_device_option,
                     help="device of the tests that take one: cpu (default), cuda or cuda:N")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The device string (as `--device` takes it) for runs a test trains; its tests skip,
    saying why, when CUDA is asked for on a machine without it."""
    name = request.config.getoption("--device")
    if name != "cpu":
        import torch

        if not torch.cuda.is_available():
            pytest.skip(f"--device {name}: CUDA is not available on this machine")
    return name


@pytest.fixture(scope="session")
def quick_preset() -> Preset:
    """`tiny` shrunk to 10 trajectories (8/1/1) of 5 states at 16², simulated 3 at a time."""
    return override(load_preset("tiny"), {
        "data.size": 32, "data.trajectories": 10, "data.transitions": 8, "data.burn_in": 3,
        "data.chunk": 3,
    })


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty job database's URL, once per backend (`postgres_db.KINDS`: PostgreSQL cases
    skip without a server). Modules whose tests need another database define their own."""
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    """The database at `url`, opened (migrated) for the test and disposed after it."""
    database = open_database(url)
    yield database
    database.dispose()
