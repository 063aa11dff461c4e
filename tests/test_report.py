"""`diffbench report`: Markdown, self-contained HTML and PNG figures from a real SQLite file
(the hand-built study of tests/results_db.py, and a study trained by a real worker); bad
input exits 2 and writes nothing; an empty database says what to do next."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from diffbench.storage import queue, records, workers
from diffbench.storage.db import open_database
from diffbench.storage.runs import RunSpec
from diffbench.tui.cli import app
from diffbench.tui.report.write import NoRuns, write_report
from tests.cli_checks import assert_one_line_error
from tests.results_db import add_run, build_study

FIGURES = ("lr_sweep", "loss_vs_time", "schedules", "loss_by_t", "samples", "spectra",
           "quality_vs_loss")


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "240", "DIFFBENCH_DB": None})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A workspace whose database holds the hand-built study."""
    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    build_study(db)
    db.dispose()
    return tmp_path


def report(runner: CliRunner, home: Path, *args: str):
    return runner.invoke(app, ["--home", str(home), "report", *args])


def test_report_writes_markdown_html_and_every_figure(runner, home):
    out = home / "out"
    result = report(runner, home, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    # the terminal table: best settings, % vs AdamW, same-device ratio, ∞, quality
    for text in ("lr 4.5e-4, wd 0.01", "0.09 ± 0.014", "−16.7 %", "1.50×", "other device",
                 "∞ (never)", "20.0 s", "not measured", "Devices mixed",
                 "std 1.20× · spec 0.2 (2.0× floor) · W1 0.05 (1.2× floor) · dyn 1.3",
                 "Sample quality, best settings", "data vs data",
                 "Sampled with 128 steps, 1 correction (τ 0.5), from t = 0.9, exact mean."):
        assert text in result.stdout, text
    markdown = (out / "report.md").read_text()
    for name in FIGURES:
        png = (out / "figures" / f"{name}.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
        assert f"](figures/{name}.png)" in markdown
    assert "| muon | linear | lr 1e-3, wd 0.01 | 2 | 0.075 ± 0.0071 | −16.7 % |" in markdown
    assert "Run 9 (sgd · linear, lr 0.1, wd 0.01, seed 0) is failed: boom." in markdown
    assert "Runs: 7 done, 1 queued, 1 failed, 1 diverged;" in markdown
    assert "Not measured: adamw · linear, sgd · linear." in markdown
    assert ("| muon | linear | lr 1e-3, wd 0.01 | 1 | 1.2 | 0.01 | 0.2 | 0.05 | 1.1 | 1.3 | 0% "
            "| 0.960 | 0.7 | yes |") in markdown
    assert "| data vs data | (floor) |  |  | 1 | 0 | 0.1 | 0.04 | 1 | 1 | — | — | — |  |" \
        in markdown
    assert "No finished runs on the `paper` preset" in markdown
    # loss by noise level: AdamW 1.5 × and 0.7071 × ADAMW_BINS, Muon MUON_BINS ± 0, SGD old
    assert "| optimizer | schedule | best setting | seeds | t0.00-0.20 |" in markdown
    assert "| t0.95-0.99 | t0.99-1.00 |" in markdown
    assert "| adamw | linear | lr 4.5e-4, wd 0.01 | 2 | 0.015 ± 0.0071 |" in markdown
    assert "| 2.25 ± 1.1 |" in markdown and "| 3 ± 0 |" in markdown
    assert "No per-bin losses (runs from before they were measured): sgd · linear." in markdown
    assert "Final fixed-noise loss by noise level" in result.stdout
    assert "t0.99-1.00" in result.stdout and "0.015 ± 0.0071" in result.stdout
    page = (out / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="figures/' not in page and "<td class=\"num\">−16.7 %</td>" in page


def test_filter_narrows_the_study_and_leaves_no_stale_figure(runner, home):
    out = home / "out"
    (out / "figures").mkdir(parents=True)
    (out / "figures" / "spectra.png").write_bytes(b"from an earlier report")
    result = report(runner, home, "--out", str(out), "--filter", "opt:adamw,sgd",
                    "-f", "status:done", "-f", "opt:adamw")
    assert result.exit_code == 0, result.stderr
    markdown = (out / "report.md").read_text()
    assert "| muon |" not in markdown and "| sgd |" in markdown
    assert "filter `optimizer:adamw,sgd status:done`" in markdown
    assert "Runs: 5 done; only done runs are aggregated." in markdown
    assert "Not drawn: sample quality not measured for any run here." in markdown
    assert not (out / "figures" / "spectra.png").exists()


def test_runs_from_before_the_loss_bins_leave_the_figure_out_saying_why(runner, home):
    out = home / "out"
    result = report(runner, home, "--out", str(out), "--filter", "opt:sgd")
    assert result.exit_code == 0, result.stderr
    markdown = (out / "report.md").read_text()
    assert "Not drawn: no run here measured its loss by noise level" in markdown
    assert "Not measured: no run in this report recorded its fixed-noise loss" in markdown
    assert not (out / "figures" / "loss_by_t.png").exists()
    assert "by noise level" not in result.stdout


def test_paper_runs_are_set_beside_the_published_numbers(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    worker = workers.register_worker(db, host="t", pid=1, device="cpu").id
    for seed, final in ((0, 0.0100), (1, 0.0102)):
        add_run(db, worker, optimizer="adamw", lr=4.5e-4, seed=seed, preset="paper",
                epochs=1024, losses=[0.02, final])
    console = Console(file=io.StringIO(), width=200)
    path = write_report(db, tmp_path / "r", console=console)
    db.dispose()
    assert path == tmp_path / "r" / "report.md"
    markdown = path.read_text()
    assert "Source: arXiv 2510.19376" in markdown
    assert "| fig2L | AdamW | 4.5e-4 | 0.00907 | 0.0101 | +11.4 % | 2 | lr 4.5e-4" in markdown
    assert "| fig2L | Muon | 1e-3 | 0.00744 | — | — | 0 | no matching runs |" in markdown
    assert "Best setting per optimizer" in console.file.getvalue()


@pytest.mark.parametrize("args,fragment", [
    (["--filter", "color:red"], "unknown key 'color'"),
    (["--filter", "opt:lion"], "unknown optimizer 'lion'"),
    (["--filter", "schedule:step"], "unknown schedule 'step'"),
    (["--filter", "status:finished"], "unknown status 'finished'"),
    (["--filter", "seed:one"], "seed takes whole numbers"),
    (["--out", "{home}/diffbench.db"], "is not a folder"),
    (["--out", "{home}/diffbench.db/report"], "diffbench.db is not a directory"),
])
def test_bad_input_exits_2_and_writes_nothing(runner, home, args, fragment):
    before = sorted(p.name for p in home.iterdir())
    args = [a.format(home=home) for a in args]
    result = report(runner, home, *args)
    assert_one_line_error(result, fragment)
    assert sorted(p.name for p in home.iterdir()) == before  # no report folder


def test_empty_database_says_what_to_do_next(runner, tmp_path):
    result = report(runner, tmp_path, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    assert "no runs in the database yet" in result.stderr
    assert "diffbench queue add" in result.stderr and "diffbench demo" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_filter_matching_nothing_is_reported(runner, home):
    result = report(runner, home, "--out", str(home / "out"), "-f", "preset:paper")
    assert result.exit_code == 0
    assert "no runs match preset:paper (10 runs in the database)" in result.stderr
    assert not (home / "out").exists()
    db = open_database(f"sqlite:///{home / 'diffbench.db'}")
    with pytest.raises(NoRuns):
        write_report(db, home / "out", filters=["preset:paper"])
    db.dispose()


def test_cli_import_loads_no_matplotlib():
    code = ("import sys, diffbench.tui.cli\n"
            "bad = [m for m in ('matplotlib', 'numpy', 'torch') if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.slow
def test_report_from_a_study_trained_by_a_real_worker(runner, tmp_path):
    """Two optimizers trained (and their samples scored) by `diffbench worker` on a
    10-trajectory preset, then the report: every figure drawn from the stored runs."""
    from tests.helpers import preset_toml, quick

    toml = tmp_path / "rquick.toml"
    toml.write_text(preset_toml(quick(**{
        "train.epochs": 2, "train.samples_every": 1, "quality.trajectories": 2,
        "quality.length": 5, "quality.steps": 2, "quality.corrections": 0})))
    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    queue.enqueue(db, [RunSpec(str(toml), o, "linear", 1e-3, 0.01, 0, epochs=2)
                       for o in ("adamw", "muon")])
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}
    worker = subprocess.run(
        [str(Path(sys.executable).with_name("diffbench")), "--home", str(tmp_path), "worker",
         "--device", "cpu", "--idle-exit", "0.5"], capture_output=True, text=True, env=env,
        timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert [r.status.value for r in queue.list_runs(db)] == ["done", "done"]
    db.dispose()
    result = report(runner, tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "adamw" in result.stdout and "muon" in result.stdout and "baseline" in result.stdout
    out = tmp_path / "report"
    assert {p.stem for p in (out / "figures").glob("*.png")} == set(FIGURES)
    markdown = (out / "report.md").read_text()
    assert "Not drawn" not in markdown and "not measured" not in result.stdout
    assert "One seed per setting" in markdown and "All finished runs ran on one device: cpu" \
        in markdown
    assert "Sampled with 2 steps, 0 corrections (τ 0.5), from t = 1.0." in markdown
    # the sample figure: what each run's scores were computed on, the test data beneath
    from diffbench.storage import results
    from diffbench.tui.report.write import _samples

    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    try:
        pictures = _samples(db, results.summarize(results.load_runs(db)))
        stored = {name: [records.get_sample(db, i).array() for i in
                         results.last_sample_ids(db, [r.id for r in queue.list_runs(db)],
                                                 name).values()]
                  for name in ("quality", "quality-data")}
    finally:
        db.dispose()
    assert [label for label, _ in pictures] == ["adamw\nlinear", "muon\nlinear", "data\n(test)"]
    assert any(np.array_equal(pictures[0][1], a) for a in stored["quality"])
    assert np.array_equal(pictures[-1][1], stored["quality-data"][0])


def test_samples_unlike_the_data_are_named_with_what_is_wrong(runner, tmp_path):
    """A row whose samples miss the like-data bounds is named with its reasons and its loss
    against the best row's; one that meets them is not; old scores are labelled."""
    from tests.results_db import LEGACY_QUALITY, QUALITY, add_run

    db = open_database(f"sqlite:///{tmp_path / 'diffbench.db'}")
    worker = workers.register_worker(db, host="test", pid=1, device="cpu").id
    grainy = {**QUALITY, "std_ratio": 2.5, "spectrum_error": 0.5}  # 5× FLOOR's 0.1
    add_run(db, worker, optimizer="adamw", lr=1e-3, seed=0, losses=[0.3, 0.1],
            quality=QUALITY)
    add_run(db, worker, optimizer="sgd", lr=1e-2, seed=0, losses=[0.5, 0.3], quality=grainy)
    add_run(db, worker, optimizer="muon", lr=1e-3, seed=0, losses=[0.3, 0.11],
            quality=LEGACY_QUALITY)
    db.dispose()
    result = report(runner, tmp_path, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.stderr
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert ("Not like data: sgd · linear (lr 0.01, wd 0.01): velocity std 2.50× the data's; "
            "spectrum error 5.0× the data-vs-data floor. Its final loss is 0.3, 3.0× the best "
            "row's: not converged as far") in markdown
    assert "Not like data: adamw" not in markdown and "| adamw | linear |" in markdown
    assert "Scored before the sampler settings were recorded: muon · linear" in markdown
