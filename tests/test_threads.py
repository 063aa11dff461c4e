"""What the `diffbench` entry point sets before any command imports torch: OpenMP threads
that sleep at barriers (OMP_WAIT_POLICY=PASSIVE, docs/PERFORMANCE.md) and compiled kernels
cached in the workspace, each unless the user chose otherwise."""

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


CACHE_PROBE = """
import os, sys
sys.argv = ["diffbench", "--home", sys.argv[1], "db", "--help"]
from diffbench.tui.cli import main
try:
    main()
except SystemExit:
    pass
print("cache", os.environ.get("TORCHINDUCTOR_CACHE_DIR"))
"""


def test_compiled_kernels_are_cached_in_the_workspace_unless_told_otherwise(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    home = tmp_path / "home"
    result = subprocess.run([sys.executable, "-c", CACHE_PROBE, str(home)], capture_output=True,
                            text=True, env=env, check=True)
    assert result.stdout.split()[-2:] == ["cache", str(home / "cache" / "inductor")]
    env["TORCHINDUCTOR_CACHE_DIR"] = str(tmp_path / "mine")
    result = subprocess.run([sys.executable, "-c", CACHE_PROBE, str(home)], capture_output=True,
                            text=True, env=env, check=True)
    assert result.stdout.split()[-2:] == ["cache", str(tmp_path / "mine")]
    assert not home.exists()  # nothing written by setting it
