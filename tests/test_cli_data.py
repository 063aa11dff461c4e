"""`diffbench data …` end to end: the real console script, then each command and bad input.

One small data set is generated once per session through the installed console script,
from a preset file that shrinks `tiny` (32² → 16², 16 transitions, 10 trajectories) so it
takes seconds on 2 cores; the other tests read it or copies of it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_checks import assert_one_line_error
from typer.testing import CliRunner

from diffbench.storage.workspace import ENV_VAR, Workspace
from diffbench.tui.cli import app

N = 10  # trajectories: split 8 / 1 / 1
FRAME = [8, 2, 16, 16]  # (T, 2, H, W) of the quick preset
CUDA = shutil.which("nvidia-smi") is not None


def console_script() -> str:
    script = Path(sys.executable).with_name("diffbench")
    return str(script) if script.exists() else shutil.which("diffbench") or "diffbench"


def run_script(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([console_script(), *args], capture_output=True, text=True,
                          env={**os.environ, "NO_COLOR": "1", **(env or {})}, timeout=300)


@pytest.fixture(scope="session")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("home")


def write_preset(preset, path: Path) -> Path:
    """A preset as a TOML file (`--preset` takes paths too)."""
    lines = []
    for section, values in preset.to_dict().items():
        if section != "name":
            lines += [f"[{section}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml_value(value) -> str:
    """JSON for numbers and lists; an inline table for a table (`[optimizers]` entries)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def quick_preset(**changes):
    """`tiny` shrunk for speed (32² → 16², 16 transitions)."""
    from diffbench.engine.config import load_preset, override

    return override(load_preset("tiny"), {
        "data.size": 32, "data.trajectories": N, "data.transitions": 16, "data.burn_in": 8,
        "data.chunk": 5, **changes,
    })


@pytest.fixture(scope="session")
def quick_toml(tmp_path_factory) -> Path:
    return write_preset(quick_preset(), tmp_path_factory.mktemp("presets") / "quick.toml")


@pytest.fixture(scope="session")
def generated(home, quick_toml) -> tuple[Path, subprocess.CompletedProcess]:
    """`diffbench data generate` through the real console script, into a workspace."""
    result = run_script("--home", str(home), "data", "generate", "--preset", str(quick_toml),
                        "--trajectories", str(N), "--device", "cpu")
    from diffbench.engine.config import dataset_name, load_preset

    return home / "data" / f"{dataset_name(load_preset(quick_toml))}.h5", result


@pytest.fixture
def dataset(generated) -> Path:
    path, result = generated
    assert result.returncode == 0, result.stderr
    return path


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args))


# ----------------------------------------------------------------------------- import hygiene


def test_cli_import_pulls_in_neither_torch_nor_textual():
    code = ("import sys, diffbench.tui.cli; "
            "bad = [m for m in ('torch', 'textual', 'h5py', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----------------------------------------------------------------------------- end to end


def test_generate_writes_the_workspace_file_and_summary(generated):
    path, result = generated
    assert result.returncode == 0, result.stderr
    assert path.is_file() and not path.with_name(path.name + ".partial").exists()
    assert str(path) in result.stdout and "train (8," in result.stdout
    assert f"{N}/{N}" in result.stderr  # the progress bar goes to stderr
    with h5py.File(path) as file:
        assert file["train"].shape == (8, *FRAME)
        assert file.attrs["trajectories"] == N


def test_info_json_is_pure_json_with_statistics(dataset):
    result = run_script("data", "info", str(dataset), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checksum"]["verified"] is True
    assert report["splits"] == {"train": [8, *FRAME], "valid": [1, *FRAME], "test": [1, *FRAME]}
    assert report["preset"]["name"] == "quick"
    stats = report["statistics"]
    assert stats["split"] == "train" and stats["trajectories"] == 8
    assert len(stats["spectrum"]) == 8
    # a turbulent Kolmogorov flow of the spec's magnitude (velocity std ≈ 1, KE ≈ 0.9)
    assert 0.4 < stats["u_std"] < 2 and 0.4 < stats["v_std"] < 2
    assert 0.1 < stats["kinetic_energy"] < 3
    assert 0.5 < stats["lag1_autocorrelation"] < 1
    assert stats["divergence"] < 0.2


def test_info_tables(dataset, runner):
    result = invoke(runner, "data", "info", str(dataset))
    assert result.exit_code == 0, result.output
    for text in ("checksum verified", "Layout", "kinetic energy", "E(k)", "preset_name"):
        assert text in result.stdout


def test_preview_renders_ascii_under_no_color(dataset):
    result = run_script("data", "preview", str(dataset), "--width", "100")
    assert result.returncode == 0, result.stderr
    assert "▀" not in result.stdout and "\x1b[" not in result.stdout
    assert "state 0" in result.stdout and "state 7" in result.stdout


def test_preview_truecolor_half_blocks(dataset):
    result = run_script("data", "preview", str(dataset), "--split", "train", "--index", "7",
                        "--states", "3", "--width", "120",
                        env={"NO_COLOR": "", "FORCE_COLOR": "1", "COLORTERM": "truecolor"})
    assert result.returncode == 0, result.stderr
    assert "▀" in result.stdout and "38;2;" in result.stdout
    # 3 panels of 16 columns: 8 half-block rows of 3·16 blocks
    assert sum(line.count("▀") == 48 for line in result.stdout.splitlines()) == 8


def test_preview_ascii_flag(dataset, runner):
    result = CliRunner().invoke(app, ["data", "preview", str(dataset), "--ascii",
                                      "--width", "80", "--states", "2"])
    assert result.exit_code == 0, result.output
    assert "▀" not in result.stdout and "\x1b[" not in result.stdout
    assert ". : + * # @" in result.stdout  # the ASCII legend


def test_rerun_is_a_no_op(dataset, home, quick_toml):
    before = dataset.stat().st_mtime_ns
    result = run_script("--home", str(home), "data", "generate", "--preset", str(quick_toml),
                        "--trajectories", str(N), "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert dataset.stat().st_mtime_ns == before


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--preset", "nope"], ["unknown preset 'nope'", "tiny"]),
        (["--preset", "tiny", "--trajectories", "0"], ["--trajectories must be positive"]),
        (["--preset", "tiny", "--trajectories", "-3"], ["--trajectories must be positive"]),
        (["--preset", "tiny", "--trajectories", "2"], ["empty"]),  # a split would be empty
        (["--preset", "tiny", "--seed", "-1"], ["--seed must be non-negative"]),
        (["--preset", "tiny", "--device", "tpu"], ["unknown device 'tpu'"]),
        (["--preset", "missing.toml"], ["missing.toml", "does not exist"]),
    ],
)
def test_generate_rejects_bad_input_before_writing(tmp_path, runner, args, fragments):
    result = invoke(runner, "--home", str(tmp_path / "home"), "data", "generate", *args)
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "home").exists()


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_generate_without_gpu_rejects_cuda(tmp_path, runner):
    out = tmp_path / "x.h5"
    result = invoke(runner, "data", "generate", "--preset", "tiny", "--device", "cuda",
                    "--out", str(out))
    assert_one_line_error(result, "CUDA is not available")
    assert list(tmp_path.iterdir()) == []


def test_generate_rejects_unwritable_paths(tmp_path, runner):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = invoke(runner, "data", "generate", "--preset", "tiny", "--out",
                    str(blocker / "sub" / "x.h5"))
    assert_one_line_error(result, "is not a directory")
    result = invoke(runner, "data", "generate", "--preset", "tiny", "--out", str(tmp_path))
    assert_one_line_error(result, "is a directory")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_generate_refuses_to_overwrite_another_recipe(dataset, tmp_path, runner):
    target = tmp_path / "other.h5"
    shutil.copy(dataset, target)
    before = target.read_bytes()
    result = invoke(runner, "data", "generate", "--preset", "tiny", "--out", str(target))
    assert_one_line_error(result, "another recipe")
    assert target.read_bytes() == before


@pytest.mark.slow
def test_sigint_exits_130_keeps_the_partial_and_a_rerun_resumes(tmp_path):
    """A real Ctrl-C mid-run: exit 130, no final file; the rerun equals an uninterrupted run."""
    import torch

    from diffbench.engine.dataset import generate_dataset

    slow = quick_preset(**{"data.trajectories": 20, "data.chunk": 1})
    toml = write_preset(slow, tmp_path / "slow.toml")
    out, partial = tmp_path / "slow.h5", tmp_path / "slow.h5.partial"
    args = [console_script(), "--home", str(tmp_path), "data", "generate", "--preset", str(toml),
            "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "NO_COLOR": "1"}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    deadline = time.monotonic() + 120  # the writer holds the HDF5 lock: watch the file appear
    while not partial.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
    time.sleep(1.0)  # some chunks written, far from all (the whole run takes ~5 s)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert partial.exists() and not out.exists()

    resumed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not partial.exists()
    whole = generate_dataset(slow, tmp_path / "whole.h5", device=torch.device("cpu"))
    with h5py.File(out, "r") as again, h5py.File(whole, "r") as reference:
        for split in ("train", "valid", "test"):
            assert np.array_equal(again[split][...], reference[split][...])


def corrupt_copy(dataset: Path, tmp_path: Path) -> Path:
    target = tmp_path / "corrupt.h5"
    shutil.copy(dataset, target)
    with h5py.File(target, "r+") as file:
        file["valid"][0, 0, 0, 0, 0] += 1.0
    return target


def test_info_rejects_corrupt_truncated_foreign_and_missing_files(dataset, tmp_path, runner):
    assert_one_line_error(invoke(runner, "data", "info", str(corrupt_copy(dataset, tmp_path))),
                          "checksum mismatch")

    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(dataset.read_bytes()[: dataset.stat().st_size // 2])
    assert_one_line_error(invoke(runner, "data", "info", str(truncated)), "truncated.h5")

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as file:
        file["x"] = np.zeros(3)
    assert_one_line_error(invoke(runner, "data", "info", str(foreign)),
                          "not a diffbench data set")

    text = tmp_path / "text.h5"
    text.write_text("hello")
    assert_one_line_error(invoke(runner, "data", "info", str(text)), "not an HDF5 file")
    assert_one_line_error(invoke(runner, "data", "info", str(tmp_path / "nope.h5")),
                          "no data set", "nope.h5")
    assert_one_line_error(invoke(runner, "data", "info", str(dataset), "--split", "x"), "--split")


def test_preview_rejects_bad_indices(dataset, runner):
    assert_one_line_error(invoke(runner, "data", "preview", str(dataset), "--index", "1"),
                          "--index 1 is out of range", "1 trajectories")
    assert_one_line_error(invoke(runner, "data", "preview", str(dataset), "--states", "0"),
                          "--states must be positive")
    assert_one_line_error(invoke(runner, "data", "preview", str(dataset), "--states", "99"),
                          "exceeds the 8 stored states")
    assert_one_line_error(invoke(runner, "data", "preview", str(dataset), "--width", "12"),
                          "too narrow")


def test_error_messages_keep_brackets(tmp_path, runner):
    bad = tmp_path / "bad.toml"
    bad.write_text("[nonsense]\nx = 1\n")
    result = invoke(runner, "data", "generate", "--preset", str(bad))
    assert_one_line_error(result, "unknown section [nonsense]")


def test_console_script_errors_are_one_line_too(tmp_path):
    result = run_script("--home", str(tmp_path / "h"), "data", "generate", "--preset", "nope")
    assert_one_line_error(result, "unknown preset")
    assert not (tmp_path / "h").exists()


# ----------------------------------------------------------------------------- workspace, help


def test_workspace_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert Workspace.resolve().root == tmp_path / "env"
    assert Workspace.resolve(tmp_path / "flag").root == tmp_path / "flag"
    monkeypatch.delenv(ENV_VAR)
    assert Workspace.resolve().root.name == "diffbench"
    assert Workspace.resolve(tmp_path).dataset_path("tiny") == tmp_path / "data" / "tiny.h5"


def test_info_and_preview_find_data_sets_by_name_in_the_workspace(dataset, home, runner):
    name = dataset.stem  # quick-<hash8>
    result = invoke(runner, "--home", str(home), "data", "info", name, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["path"] == str(dataset)
    result = invoke(runner, "--home", str(home), "data", "preview", name, "--ascii")
    assert result.exit_code == 0, result.output
    assert_one_line_error(invoke(runner, "--home", str(home), "data", "info", "nope"),
                          "no data set 'nope'", str(home / "data" / "nope.h5"))


def test_home_comes_from_the_environment(tmp_path, runner, monkeypatch):
    import diffbench.engine.dataset as dataset_module

    seen = []
    monkeypatch.setattr(dataset_module, "generate_dataset",
                        lambda preset, path, **_: seen.append(Path(path)) or path)
    monkeypatch.setattr("diffbench.tui.commands.data._print_written", lambda path, elapsed: None)
    from diffbench.engine.config import dataset_name, load_preset, override

    for extra in ([], ["--trajectories", "12", "--seed", "3"]):
        result = runner.invoke(app, ["data", "generate", "--preset", "tiny", "--device", "cpu",
                                     *extra], env={ENV_VAR: str(tmp_path)})
        assert result.exit_code == 0, result.output
    # the worker's name for a run with --set data.trajectories=12 data.seed=3: the same file
    asked = override(load_preset("tiny"), {"data.trajectories": 12, "data.seed": 3})
    assert seen == [tmp_path / "data" / "tiny.h5",
                    tmp_path / "data" / f"{dataset_name(asked)}.h5"]


@pytest.mark.parametrize("command", [[], ["data"], ["data", "generate"], ["data", "info"],
                                     ["data", "preview"]])
def test_help_teaches(runner, command):
    result = invoke(runner, *command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    if len(command) == 2:
        assert "Examples" in result.stdout and f"diffbench data {command[1]}" in result.stdout
