"""OpenMP threads sleep at barriers unless the user chose: the `diffbench` entry point sets
OMP_WAIT_POLICY=PASSIVE before any command imports torch (docs/PERFORMANCE.md)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
import os, sys
sys.argv = ["diffbench", "--help"]
from diffbench.tui.cli import main
try:
    main()
except SystemExit:
    pass
print("policy", os.environ.get("OMP_WAIT_POLICY"), "torch" in sys.modules)
"""


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_the_entry_point_lets_idle_threads_sleep_unless_told_otherwise(given, expected):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            env=env, check=True)
    assert result.stdout.split()[-3:] == ["policy", expected, "False"]
