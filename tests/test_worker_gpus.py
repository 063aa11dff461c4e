"""Several workers per GPU: `expand_gpus` (which GPU each worker sees), the supervisor's log
line, and `mps_daemon` driving a stand-in `nvidia-cuda-mps-control` (a bash script first
on PATH that logs its calls and plays a daemon with a file in the pipe directory)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from diffbench.tui.errors import UserError
from diffbench.tui.runner.gpus import describe_workers, expand_gpus
from diffbench.tui.runner.mps import mps_daemon

FAKE_CONTROL = """#!/bin/bash
# Stand-in for nvidia-cuda-mps-control: logs argv, environment and stdin; -d "starts" the
# daemon (a file in the pipe directory), commands on stdin fail unless it "runs", quit ends it.
pipe="$CUDA_MPS_PIPE_DIRECTORY"
echo "argv=$* pipe=$pipe log=$CUDA_MPS_LOG_DIRECTORY visible=${CUDA_VISIBLE_DEVICES-unset}" \\
    >> "@CALLS@"
if [ "$1" = -d ]; then
    [ -z "$FAKE_MPS_FAIL" ] || exit 3
    touch "$pipe/control"
    exit 0
fi
read -r command
echo "stdin=$command" >> "@CALLS@"
[ -e "$pipe/control" ] || exit 1
[ "$command" != quit ] || rm "$pipe/control"
"""


@pytest.fixture
def fake_control(tmp_path, monkeypatch) -> Path:
    """Put the stand-in first on PATH; the path of its call log."""
    bin_dir, log = tmp_path / "bin", tmp_path / "control.log"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-cuda-mps-control"
    script.write_text(FAKE_CONTROL.replace("@CALLS@", str(log)))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


def calls(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


# ----------------------------------------------------------------------------- expand_gpus


@pytest.mark.parametrize("gpus,per_gpu,visible,expected", [
    ("0,1", 2, None, ["0", "0", "1", "1"]),
    ("0,0,0,0", 1, None, ["0", "0", "0", "0"]),
    ("0", 4, None, ["0", "0", "0", "0"]),
    (" 1 , 0 ", 1, None, ["1", "0"]),
    ("1,0,1", 1, "4,5", ["5", "4", "5"]),  # indices count among CUDA_VISIBLE_DEVICES
    ("all", 2, "4,5", ["4", "4", "5", "5"]),
    ("0", 2, "GPU-aa11,GPU-bb22", ["GPU-aa11", "GPU-aa11"]),
])
def test_expand_gpus(gpus, per_gpu, visible, expected):
    assert expand_gpus(gpus, per_gpu=per_gpu, visible=visible) == expected


def test_expand_all_counts_devices_without_cuda_visible_devices():
    assert expand_gpus("all", per_gpu=3, device_count=lambda: 2) == ["0"] * 3 + ["1"] * 3


@pytest.mark.parametrize("gpus,visible,message", [
    ("x", None, "--gpus takes 'all' or indices"),
    ("0,x", None, "--gpus takes 'all' or indices"),
    ("-1", None, "--gpus takes 'all' or indices"),
    ("", None, "--gpus takes 'all' or indices"),
    ("²", None, "--gpus takes 'all' or indices"),  # a digit to isdigit(), not to int()
    ("0,2", "4,5", "CUDA_VISIBLE_DEVICES=4,5 shows 2 device(s)"),
    ("all", "", "no CUDA device is visible"),
])
def test_expand_gpus_rejects(gpus, visible, message):
    with pytest.raises(UserError, match=re.escape(message)):
        expand_gpus(gpus, visible=visible, device_count=lambda: 0)


def test_expand_all_without_devices_is_a_user_error():
    with pytest.raises(UserError, match="no CUDA device is visible"):
        expand_gpus("all", per_gpu=4, device_count=lambda: 0)


@pytest.mark.parametrize("ids,mps,line", [
    (["0"] * 4, True, "started 4 workers (GPU 0 ×4, MPS)"),
    (["0", "0", "1"], False, "started 3 workers (GPU 0 ×2, GPU 1, time-slicing)"),
    (["0", "1"], False, "started 2 workers (GPU 0, GPU 1)"),
    (["3"], False, "started 1 worker (GPU 3)"),
])
def test_supervisor_log_line(ids, mps, line):
    assert describe_workers(ids, mps=mps) == line


# ----------------------------------------------------------------------------- mps_daemon


def test_mps_daemon_starts_with_workspace_dirs_and_quits_at_exit(tmp_path, fake_control,
                                                                 monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    home, lines = tmp_path / "home", []
    pipe, logs = home / "mps" / "pipe", home / "mps" / "log"
    with mps_daemon(home, enabled=True, log=lines.append) as env:
        assert env == {"CUDA_MPS_PIPE_DIRECTORY": str(pipe),
                       "CUDA_MPS_LOG_DIRECTORY": str(logs)}
        assert pipe.is_dir() and logs.is_dir()
        # a probe that finds no daemon, then the start; the daemon sees every GPU, so the
        # workers' CUDA_VISIBLE_DEVICES are not renumbered
        assert calls(fake_control) == [
            f"argv= pipe={pipe} log={logs} visible=unset", "stdin=get_server_list",
            f"argv=-d pipe={pipe} log={logs} visible=unset"]
        assert (pipe / "control").exists()
    assert calls(fake_control)[3:] == [f"argv= pipe={pipe} log={logs} visible=unset",
                                       "stdin=quit"]
    assert not (pipe / "control").exists()
    assert lines == [f"MPS: started a control daemon on {pipe}"]


def test_mps_daemon_quits_when_the_block_raises(tmp_path, fake_control):
    with pytest.raises(KeyboardInterrupt), mps_daemon(tmp_path, enabled=True, log=print):
        raise KeyboardInterrupt
    assert calls(fake_control)[-1] == "stdin=quit"


def test_mps_daemon_reuses_a_running_daemon_and_leaves_it_running(tmp_path, fake_control):
    pipe = tmp_path / "mps" / "pipe"
    pipe.mkdir(parents=True)
    (pipe / "control").touch()  # another supervisor's daemon
    lines = []
    with mps_daemon(tmp_path, enabled=True, log=lines.append) as env:
        assert env["CUDA_MPS_PIPE_DIRECTORY"] == str(pipe)
    assert [c for c in calls(fake_control) if c.startswith("stdin")] == ["stdin=get_server_list"]
    assert not any("argv=-d" in c for c in calls(fake_control))
    assert (pipe / "control").exists()
    assert lines == [f"MPS: using the control daemon already running on {pipe}"]


def test_mps_daemon_disabled_does_nothing(tmp_path, fake_control):
    lines = []
    with mps_daemon(tmp_path / "home", enabled=False, log=lines.append) as env:
        assert env == {}
    assert calls(fake_control) == [] and lines == []
    assert not (tmp_path / "home").exists()


def test_mps_daemon_without_the_binary_says_time_slicing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    lines = []
    with mps_daemon(tmp_path / "home", enabled=True, log=lines.append) as env:
        assert env == {}
    assert len(lines) == 1 and "time-slicing" in lines[0]
    assert not (tmp_path / "home").exists()


def test_mps_daemon_that_fails_to_start_falls_back_to_time_slicing(tmp_path, fake_control,
                                                                   monkeypatch):
    monkeypatch.setenv("FAKE_MPS_FAIL", "1")
    lines = []
    with mps_daemon(tmp_path, enabled=True, log=lines.append) as env:
        assert env == {}
    assert "stdin=quit" not in calls(fake_control)
    assert len(lines) == 1 and "exit 3" in lines[0] and "time-slicing" in lines[0]


# ----------------------------------------------------------------------------- the supervisor


def test_gpus_supervisor_runs_mps_around_its_workers(tmp_path, fake_control):
    """`diffbench worker --gpus 0 --per-gpu 2`: the daemon starts, two children run (here,
    without CUDA, each exits 2 at once), the daemon quits."""
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("diffbench")), "--home", str(tmp_path / "home"),
         "worker", "--db", f"sqlite:///{tmp_path / 'jobs.db'}", "--gpus", "0",
         "--per-gpu", "2", "--idle-exit", "0"],
        capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode in (0, 2), result.stderr  # 2: no CUDA on this machine
    assert "started 2 workers (GPU 0 ×2, MPS)" in result.stderr
    made = [c.split(" ")[0] for c in calls(fake_control) if c.startswith("argv=")]
    assert made == ["argv=", "argv=-d", "argv="] and calls(fake_control)[-1] == "stdin=quit"
