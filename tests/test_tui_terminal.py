"""`diffbench tui` in a real terminal: tmux runs it against a workspace whose runs a real
worker trained; `capture-pane` shows what a user would see, `q` exits with status 0."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tui_db import BRAILLE, trained_workspace

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (apt install tmux)")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_workspace(tmp_path_factory.getbasetemp() / "tui-trained")


def tmux(socket: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TMUX, "-L", socket, *args], capture_output=True, text=True)


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    return predicate()


@pytest.mark.parametrize("size", [(160, 48), (80, 24)])
def test_tui_in_tmux_shows_runs_curves_vorticity_and_quits(trained, tmp_path, size):
    socket = f"diffbench-test-{os.getpid()}-{size[0]}"
    status = tmp_path / "status"
    command = (f"{Path(sys.executable).with_name('diffbench')} --home {trained.home} tui; "
               f"echo $? > {status}")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DIFFBENCH_DB",
                                                             "TMUX")}
    subprocess.run([TMUX, "-L", socket, "-f", "/dev/null", "new-session", "-d", "-x",
                    str(size[0]), "-y", str(size[1]), "sh", "-c", command],
                   check=True, env={**env, "TERM": "xterm-256color", "COLORTERM": "truecolor"})
    try:
        def screen() -> str:
            return tmux(socket, "capture-pane", "-p", "-t", "0").stdout

        wide = size[0] >= 120
        first = wait_for(lambda: (text := screen()) and "done" in text
                         and (not wide or ("▀" in text and BRAILLE & set(text))) and text)
        assert first, screen()
        text = first
        if not wide:  # one pane at a time: visit the curves and the vorticity tabs
            tmux(socket, "send-keys", "-t", "0", "2")
            text += wait_for(lambda: BRAILLE & set(screen()) and screen())
            tmux(socket, "send-keys", "-t", "0", "4")
            text += wait_for(lambda: "▀" in screen() and screen())
        for run_id in (*trained.done, trained.queued):
            assert f" {run_id} " in first, first
        assert "adamw" in first and "muon" in first and "soap" in first
        assert BRAILLE & set(text), text  # a plotted curve
        assert "▀" in text, text  # half-block vorticity
        tmux(socket, "send-keys", "-t", "0", "q")
        assert wait_for(lambda: status.exists() and status.read_text().strip() == "0",
                        timeout=15), screen()
        assert wait_for(lambda: tmux(socket, "has-session").returncode != 0, timeout=10)
    finally:
        tmux(socket, "kill-server")


def test_run_screen_in_tmux_at_80x24(trained, tmp_path):
    """Over SSH: enter opens the first run's screen (one column: losses first), → scrubs
    the previews into view (half blocks), esc returns to the runs, q exits with 0."""
    socket = f"diffbench-test-{os.getpid()}-run"
    status = tmp_path / "status"
    command = (f"{Path(sys.executable).with_name('diffbench')} --home {trained.home} tui; "
               f"echo $? > {status}")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DIFFBENCH_DB",
                                                             "TMUX")}
    subprocess.run([TMUX, "-L", socket, "-f", "/dev/null", "new-session", "-d", "-x", "80",
                    "-y", "24", "sh", "-c", command],
                   check=True, env={**env, "TERM": "xterm-256color", "COLORTERM": "truecolor"})
    try:
        def screen() -> str:
            return tmux(socket, "capture-pane", "-p", "-t", "0").stdout

        def keys(*names: str) -> None:
            tmux(socket, "send-keys", "-t", "0", *names)

        assert wait_for(lambda: "✓ done" in screen()), screen()
        keys("Enter")
        text = wait_for(lambda: (s := screen()) and "fixed-noise" in s and "esc back" in s
                        and s)
        assert text, screen()
        assert f"run #{trained.done[0]}" in text and "✓ done" in text and "adamw" in text
        assert "─ losses ─" in text and ".99–1" in text  # the last t-bin, in one column
        keys("Left")  # the first epoch's preview, scrolled into view
        text = wait_for(lambda: (s := screen()) and "1/3 generated after epoch 1" in s and s)
        assert text and "▀" in text, screen()
        keys("Escape")
        assert wait_for(lambda: "fixed-noise" not in (s := screen()) and "○ queued" in s), \
            screen()
        keys("q")
        assert wait_for(lambda: status.exists() and status.read_text().strip() == "0",
                        timeout=15), screen()
    finally:
        tmux(socket, "kill-server")


def seeds_home(root: Path) -> Path:
    """A workspace whose database holds three seeds of one AdamW setting and one Muon run,
    each with a falling, noisy loss, written through the storage API."""
    import numpy as np

    from diffbench.storage import queue, records, workers
    from diffbench.storage.db import open_database
    from diffbench.storage.runs import RunSpec

    home = root / "seeds-home"
    db = open_database(f"sqlite:///{home / 'diffbench.db'}")
    try:
        specs = [RunSpec(preset="tiny", optimizer=name, schedule="linear", lr=1e-3,
                         weight_decay=0.0, seed=seed, epochs=2)
                 for name, seed in (("adamw", 0), ("adamw", 1), ("adamw", 2), ("muon", 0))]
        ids = queue.enqueue(db, specs).ids
        worker = workers.register_worker(db, host="box", pid=1, device="cpu").id
        for run_id, spec in zip(ids, specs, strict=True):
            queue.claim_next(db, worker, ids=[run_id])
            queue.record_start(db, run_id, worker, provenance={"device": "cpu"})
            rng = np.random.default_rng(run_id)
            level = 1 + 0.3 * (spec.seed - 1)
            records.add_step_metrics(db, run_id, [
                {"step": s, "epoch": (s - 1) // 50, "lr": 1e-3, "grad_norm": 1.0,
                 "loss": level * (0.05 + 1 / (1 + s / 10)) * float(np.exp(
                     0.1 * rng.standard_normal())),
                 "data_ms": 1.0, "compute_ms": 20.0, "optimizer_ms": 5.0}
                for s in range(1, 101)])
            queue.finish(db, run_id, worker, "done")
    finally:
        db.dispose()
    return home


def test_grouped_chart_with_a_band_in_tmux(tmp_path):
    """`g` in a real terminal: the AdamW seeds' mean line over a filled ±std band (`░`),
    labelled, beside the table's grouped rows; q exits with 0."""
    home = seeds_home(tmp_path)
    socket = f"diffbench-test-{os.getpid()}-band"
    status = tmp_path / "status"
    command = (f"{Path(sys.executable).with_name('diffbench')} --home {home} tui; "
               f"echo $? > {status}")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "DIFFBENCH_DB",
                                                             "TMUX")}
    subprocess.run([TMUX, "-L", socket, "-f", "/dev/null", "new-session", "-d", "-x", "160",
                    "-y", "48", "sh", "-c", command],
                   check=True, env={**env, "TERM": "xterm-256color", "COLORTERM": "truecolor"})
    try:
        def screen() -> str:
            return tmux(socket, "capture-pane", "-p", "-t", "0").stdout

        assert wait_for(lambda: "✓ done" in (s := screen()) and BRAILLE & set(s)), screen()
        tmux(socket, "send-keys", "-t", "0", "g")
        text = wait_for(lambda: (s := screen()) and "mean ± std over 3" in s and "░" in s
                        and s)
        assert text, screen()
        assert "seeds" in text and "adamw·linear" in text and BRAILLE & set(text)
        assert "final loss (mean ± std)" in text  # the table grouped too
        tmux(socket, "send-keys", "-t", "0", "q")
        assert wait_for(lambda: status.exists() and status.read_text().strip() == "0",
                        timeout=15), screen()
    finally:
        tmux(socket, "kill-server")
