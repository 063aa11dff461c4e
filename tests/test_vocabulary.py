"""One vocabulary (engine/vocabulary.py): the registries that implement its names agree with
it, the report and the dashboard colour an optimizer alike, and every layer words a bad
learning rate or weight decay the same way."""

from __future__ import annotations

import pytest

from diffbench.engine import vocabulary
from diffbench.engine.config import PresetError, load_preset, override
from diffbench.engine.dataset import SPLITS
from diffbench.engine.optimizers import OPTIMIZERS, OptimizerError, build_optimizer
from diffbench.engine.run_config import RunConfig, RunError
from diffbench.engine.schedules import SCHEDULES
from diffbench.storage.db import StorageError, open_database
from diffbench.storage.queue import enqueue
from diffbench.storage.runs import RunSpec
from diffbench.tui.dashboard.palette import optimizer_rgb, optimizer_style
from diffbench.tui.report.figures import _color


def test_the_registries_implement_exactly_the_vocabulary():
    assert OPTIMIZERS == vocabulary.OPTIMIZERS
    assert SCHEDULES == vocabulary.SCHEDULES
    assert SPLITS == vocabulary.SPLITS
    assert set(vocabulary.OWN_SCHEDULE) <= set(OPTIMIZERS)
    for preset in ("tiny", "demo", "small", "paper"):  # defaults only for known optimizers
        assert set(load_preset(preset).optimizers) <= set(vocabulary.OPTIMIZERS)


def test_the_quality_scores_are_the_engines():
    """Every float score `engine.quality` computes is named once, with its header; the
    report's table, its figure and the storage means read that list."""
    import dataclasses

    from diffbench.engine.quality import QualityScores
    from diffbench.storage.sample_quality import QUALITY_KEYS

    scores = {f.name for f in dataclasses.fields(QualityScores)
              if f.type in ("float", "float | None")} - {"seconds"}
    keys = [s.key for s in vocabulary.QUALITY_SCORES]
    assert set(keys) == scores and len(keys) == len(scores)
    assert tuple(keys) == QUALITY_KEYS
    assert all(s.header and format(0.5, s.format) for s in vocabulary.QUALITY_SCORES)


def test_one_colour_per_optimizer_in_report_and_dashboard():
    """Before: ScheduleFree and Prodigy had each other's colour in the dashboard."""
    colours = [vocabulary.optimizer_rgb(name) for name in vocabulary.OPTIMIZERS]
    assert len(set(colours)) == len(colours) and vocabulary.OTHER_RGB not in colours
    for name in vocabulary.OPTIMIZERS:
        r, g, b = optimizer_rgb(name)
        assert _color(name) == f"#{r:02x}{g:02x}{b:02x}"
        assert optimizer_style(name) == f"rgb({r},{g},{b})"
    assert _color("lion") == vocabulary.optimizer_hex("lion")  # unknown: one grey everywhere


def test_run_schedule_is_the_schedulefree_rule():
    assert vocabulary.run_schedule("schedulefree", "wsd") == "constant"
    assert vocabulary.run_schedule("adamw", "wsd") == "wsd"


@pytest.mark.parametrize(("lr", "wd", "wording"), [
    (0.0, 0.01, "lr must be a positive number, got 0.0"),
    (float("inf"), 0.01, "lr must be a positive number, got inf"),
    (1e-3, -1.0, "weight_decay must be a non-negative number, got -1.0"),
])
def test_every_layer_words_a_bad_value_alike(tmp_path, lr, wd, wording):
    preset = load_preset("tiny")
    with pytest.raises(RunError, match=wording):
        RunConfig(preset=preset, optimizer="adamw", schedule="linear", lr=lr, weight_decay=wd)
    with pytest.raises(OptimizerError, match=wording):
        import torch

        build_optimizer(torch.nn.Linear(2, 2), "adamw", lr, wd)
    with pytest.raises(PresetError, match=f"optimizers.adamw.{wording}"):
        override(preset, {"optimizers.adamw.lr": lr, "optimizers.adamw.weight_decay": wd})
    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        with pytest.raises(StorageError, match=wording):
            enqueue(db, [RunSpec("tiny", "adamw", "linear", lr, wd, 0)])
    finally:
        db.dispose()


def test_an_optimizer_without_preset_defaults_trains_with_an_explicit_lr_and_wd(tmp_path):
    """A preset written before an optimizer existed still loads; its runs of that optimizer
    need --lr and --wd, and say so (adding an optimizer: a vocabulary entry and a builder)."""
    from typer.testing import CliRunner

    from diffbench.engine.config import Preset
    from diffbench.tui.cli import app
    from tests.helpers import preset_toml

    table = load_preset("tiny").to_dict()
    del table["optimizers"]["soap"]
    older = Preset.from_dict(table, name="older")
    assert "soap" not in older.optimizers and "adamw" in older.optimizers
    toml = tmp_path / "older.toml"
    toml.write_text(preset_toml(older))
    runner = CliRunner()
    home = ["--home", str(tmp_path / "home")]
    refused = runner.invoke(app, [*home, "queue", "add", "-p", str(toml), "-O", "soap"])
    assert refused.exit_code == 2
    assert "has no defaults for optimizer 'soap'; give --lr and --wd" in refused.stderr
    queued = runner.invoke(app, [*home, "queue", "add", "-p", str(toml), "-O", "soap",
                                 "--lr", "1e-3", "--wd", "0.01"])
    assert queued.exit_code == 0, queued.stderr
