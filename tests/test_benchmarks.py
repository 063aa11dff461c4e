"""Every script in benchmarks/ runs, as a subprocess at the smallest sizes its options allow,
and prints the line that carries its figures: CI does not run the benchmarks for their
numbers, so without this a renamed function or a changed record would leave them broken
until someone needs them. The numbers themselves mean nothing at these sizes.

With `--device cuda` the scripts that take a device run on the GPU (and optimizer_step.py,
CUDA only, runs at all); fidelity.py needs jax-cfd (the `reference` extra).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import preset_toml, quick

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SLOW = {"chaos.py", "datagen.py", "fidelity.py", "optimizer_step.py",
        "speed_ladder.py"}  # ≥ 5 s on 2 cores
SCRIPTS = ["chaos.py", "datagen.py", "datastats.py", "fidelity.py", "logging_overhead.py",
           "optimizer_step.py", "speed_ladder.py", "step_time.py", "tui_refresh.py"]


def smoke(script: str, device: str, toml: Path) -> tuple[list[str], list[str]]:
    """The smallest run of ``script`` on ``device`` (``toml``: a preset file of
    `helpers.quick`) and the fragments its output must hold."""
    cpu_only = ["--cpu"] if device == "cpu" else []
    runs = {
        # the "short version in the test suite": every check, a few faults
        "chaos.py": (["--events", "6", "--runs", "3", "--workers", "2", "--epochs", "2",
                      "--lease", "3"], ["faults dealt: 6", "ok   done once", "ok   rows",
                                        "ok   resumed runs bit-identical",
                                        "ok   no locked database"]),
        "datagen.py": (["--preset", str(toml), "--batch", "1", "--steps", "2", *cpu_only],
                       ["compiled", "steps/s"]),
        "datastats.py": (["--preset", str(toml), "--trajectories", "1", "--device", device,
                          "--compare-cpu"], ["kinetic_energy", "E(1)"]),
        "fidelity.py": (["--size", "16", "--inner-steps", "2", "--intervals", "1"],
                        ["initial condition", "ms per inner step"]),
        "logging_overhead.py": (["--device", device, "--epochs", "2", "--steps", "2",
                                 "--set", "train.batch_size=2", "--set", "model.channels=[8,16]",
                                 "--set", "quality.enabled=false"], ["logging / step:"]),
        "optimizer_step.py": (["--preset", "tiny", "--optimizers", "adamw", "muon", "--steps",
                               "2"], ["forward+backward fp32", "muon", "per refresh"]),
        "speed_ladder.py": (["--preset", "tiny", "--device", device, "--rounds", "1",
                             "--steps", "1", "--parity-steps", "1", "--rungs", "pad",
                             "--per-gpu", "2", "--seconds", "0.2"],
                            ["today", "pad", "2 per device (pad)"]),
        "step_time.py": (["--preset", "tiny", "--precision", "fp32", "--device", device,
                          "--epochs", "2", "--steps", "1", "--optimizers", "adamw", "muon"],
                         ["×AdamW", "muon"]),
        "tui_refresh.py": (["--runs", "20", "--steps", "400", "--rounds", "1", "--ticks", "1"],
                           ["built 20 runs", "goal: total ≤ 100 ms"]),
    }
    return runs[script]


def test_every_benchmark_has_a_smoke_run():
    assert sorted(p.name for p in BENCHMARKS.glob("*.py")) == SCRIPTS
    assert [p.name for p in BENCHMARKS.glob("*.sh")] == ["h100_check.sh"]


def test_h100_check_is_valid_bash():
    """Syntax only: it needs a lent GPU and minutes of it to run."""
    result = subprocess.run(["bash", "-n", str(BENCHMARKS / "h100_check.sh")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("script", [
    pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in SCRIPTS])
def test_benchmark_runs_at_its_smallest(script, device, tmp_path):
    if script == "optimizer_step.py" and device == "cpu":
        pytest.skip("optimizer_step.py times CUDA kernels: it runs under --device cuda")
    if script == "fidelity.py" and importlib.util.find_spec("jax_cfd") is None:
        pytest.skip("fidelity.py compares with jax-cfd, which is not installed "
                    "(pip install -e '.[reference]')")
    toml = tmp_path / "bquick.toml"
    toml.write_text(preset_toml(quick()))
    args, expected = smoke(script, device, toml)
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=600,
                            env={**os.environ, "DIFFBENCH_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr[-3000:]
    for fragment in expected:
        assert fragment in result.stdout, result.stdout
