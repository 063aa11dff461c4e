"""The shipped sweeps (presets/sweeps/*.toml): each expands to the runs the paper's figures
need, `queue add --sweep NAME` finds them by name, and one seed means one initialisation,
data order and diffusion noise whatever the optimizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffbench.engine.config import load_preset, override
from diffbench.engine.dataset import generate_dataset
from diffbench.engine.run import TrainingData
from diffbench.engine.run_config import RunConfig
from diffbench.engine.training import Trainer
from diffbench.tui.cli import app
from tests.cli_checks import assert_one_line_error
from tests.helpers import DEMO_EPOCHS, SIX

# spec §7 (paper_results.csv, fig2L): the learning rates the paper plots per optimizer
PAPER_LRS = {"adamw": {4.5e-5, 1e-4, 2e-4, 4.5e-4, 1e-3},
             "muon": {1e-4, 2e-4, 4.5e-4, 1e-3, 2e-3},
             "soap": {4.5e-5, 1e-4, 2e-4, 4.5e-4, 1e-3, 2e-3},
             "schedulefree": {4.5e-5, 1e-4, 2e-4, 4.5e-4, 1e-3}}
PAPER_WD = {"adamw": 1e-2, "muon": 3.2e-2, "soap": 3.2e-2, "schedulefree": 1e-2}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


def dry_run(runner: CliRunner, home: Path, *args: str) -> list[dict]:
    result = runner.invoke(app, ["--home", str(home), "queue", "add", *args, "--dry-run",
                                 "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["runs"]


def best(preset: str, optimizer: str) -> tuple[float, float]:
    entry = load_preset(preset).optimizers[optimizer]
    return entry.lr, entry.weight_decay


def expected_schedule(optimizer: str) -> str:
    return "constant" if optimizer == "schedulefree" else "linear"


def test_paper_best_is_six_optimizers_at_their_best_three_seeds(runner, tmp_path):
    runs = dry_run(runner, tmp_path, "--sweep", "paper-best")
    assert len(runs) == 18
    assert sorted({r["optimizer"] for r in runs}) == sorted(SIX)
    for run in runs:
        assert (run["lr"], run["weight_decay"]) == best("paper", run["optimizer"])
        assert run["schedule"] == expected_schedule(run["optimizer"])
        assert (run["preset"], run["epochs"], run["tags"]) == ("paper", 1024, ["paper-best"])
    for optimizer in SIX:
        assert sorted(r["seed"] for r in runs if r["optimizer"] == optimizer) == [0, 1, 2]
    assert not (tmp_path / "diffbench.db").exists()  # a dry run writes nothing


def test_paper_lr_is_the_published_grid_at_the_best_decay(runner, tmp_path):
    runs = dry_run(runner, tmp_path, "--sweep", "paper-lr")
    assert len(runs) == 3 * sum(len(lrs) for lrs in PAPER_LRS.values()) == 63
    for optimizer, lrs in PAPER_LRS.items():
        mine = [r for r in runs if r["optimizer"] == optimizer]
        assert {r["lr"] for r in mine} == lrs
        assert {r["weight_decay"] for r in mine} == {PAPER_WD[optimizer]}
        assert {r["schedule"] for r in mine} == {expected_schedule(optimizer)}
        for lr in lrs:
            assert sorted(r["seed"] for r in mine if r["lr"] == lr) == [0, 1, 2]
    assert {r["epochs"] for r in runs} == {1024}


def test_paper_schedules_is_adamw_and_muon_under_five_schedules(runner, tmp_path):
    runs = dry_run(runner, tmp_path, "--sweep", "paper-schedules")
    assert len(runs) == 30
    schedules = {"linear", "cosine", "wsd", "sqrt", "sqrt-cooldown"}
    for optimizer in ("adamw", "muon"):
        mine = [r for r in runs if r["optimizer"] == optimizer]
        assert {r["schedule"] for r in mine} == schedules
        assert {(r["lr"], r["weight_decay"]) for r in mine} == {best("paper", optimizer)}
        for schedule in schedules:
            assert sorted(r["seed"] for r in mine if r["schedule"] == schedule) == [0, 1, 2]


def test_paper_longer_is_adamw_at_2048_epochs_against_muon_and_soap_at_1024(runner, tmp_path):
    runs = dry_run(runner, tmp_path, "--sweep", "paper-longer")
    assert len(runs) == 9
    adamw = [r for r in runs if r["optimizer"] == "adamw"]
    assert {(r["lr"], r["weight_decay"], r["epochs"]) for r in adamw} == {(2e-4, 1e-2, 2048)}
    for optimizer in ("muon", "soap"):
        mine = [r for r in runs if r["optimizer"] == optimizer]
        assert {(r["lr"], r["weight_decay"], r["epochs"]) for r in mine} == {
            (*best("paper", optimizer), 1024)}
    assert sorted(r["seed"] for r in runs) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_demo_is_six_optimizers_on_the_demo_preset_with_one_seed(runner, tmp_path):
    runs = dry_run(runner, tmp_path, "--sweep", "demo")
    assert [r["optimizer"] for r in runs] == SIX
    for run in runs:
        assert (run["preset"], run["seed"], run["epochs"]) == ("demo", 0, DEMO_EPOCHS)
        assert (run["lr"], run["weight_decay"]) == best("demo", run["optimizer"])
        assert run["schedule"] == expected_schedule(run["optimizer"])
        assert run["tags"] == ["demo"]
        assert run["overrides"] == {}


def test_demo_settings_are_the_best_of_the_shipped_tuning_sweep(runner, tmp_path):
    """presets/demo.toml records, per optimizer, a setting the demo-tune sweep ran."""
    tuned = {(r["optimizer"], r["lr"], r["weight_decay"])
             for r in dry_run(runner, tmp_path, "--sweep", "demo-tune")}
    for optimizer in SIX:
        assert (optimizer, *best("demo", optimizer)) in tuned, optimizer


def test_queue_sweeps_lists_every_shipped_sweep(runner, tmp_path):
    result = runner.invoke(app, ["--home", str(tmp_path), "queue", "sweeps", "--json"])
    assert result.exit_code == 0, result.output
    listed = {s["name"]: s for s in json.loads(result.stdout)}
    counts = {"demo": 6, "demo-tune": 24, "paper-best": 18, "paper-longer": 9, "paper-lr": 63,
              "paper-schedules": 30}
    assert {name: s["runs"] for name, s in listed.items()} == counts
    for sweep in listed.values():
        assert Path(sweep["path"]).is_file() and sweep["description"]
    assert listed["demo"]["presets"] == ["demo"]
    table = runner.invoke(app, ["--home", str(tmp_path), "queue", "sweeps"])
    assert table.exit_code == 0 and all(name in table.stdout for name in counts)


def test_overlapping_sweeps_queue_each_run_once(runner, tmp_path):
    """paper-longer's Muon/SOAP runs and paper-schedules' linear ones are paper-best's."""
    def add(name: str) -> dict:
        result = runner.invoke(app, ["--home", str(tmp_path), "queue", "add", "--sweep", name,
                                     "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    assert len(add("paper-best")["ids"]) == 18
    longer = add("paper-longer")
    assert len(longer["ids"]) == 3 and len(longer["skipped"]) == 6
    schedules = add("paper-schedules")
    assert len(schedules["ids"]) == 24 and len(schedules["skipped"]) == 6


def test_a_copied_sweep_file_and_command_line_defaults(runner, tmp_path):
    from diffbench.tui.study.sweeps import shipped_sweeps

    mine = tmp_path / "my-best.toml"
    shutil.copy(shipped_sweeps()["paper-best"], mine)
    mine.write_text(mine.read_text().replace('seeds = "0-2"', "seeds = [5]"))
    runs = dry_run(runner, tmp_path, "--sweep", str(mine))
    assert len(runs) == 6 and {r["seed"] for r in runs} == {5}
    # options the sweep does not set are its defaults: here the priority
    runs = dry_run(runner, tmp_path, "--sweep", "demo", "--priority", "7")
    assert {r["priority"] for r in runs} == {7}


def test_unknown_sweep_and_bad_description_exit_2(runner, tmp_path):
    result = runner.invoke(app, ["--home", str(tmp_path), "queue", "add", "--sweep", "nope"])
    assert_one_line_error(result, "unknown sweep 'nope'", "paper-best")
    bad = tmp_path / "bad.toml"
    bad.write_text('description = 3\npreset = "tiny"\noptimizer = "adamw"\n')
    result = runner.invoke(app, ["--home", str(tmp_path), "queue", "add", "--sweep", str(bad)])
    assert_one_line_error(result, "description must be a string")
    assert not (tmp_path / "diffbench.db").exists()


# ----------------------------------------------------------------------------- one seed


@pytest.fixture(scope="module")
def data(quick_preset, tmp_path_factory) -> TrainingData:
    path = generate_dataset(quick_preset, tmp_path_factory.mktemp("data") / "quick.h5",
                            device=torch.device("cpu"))
    return TrainingData.load(path, quick_preset)


def trainer(preset, data, optimizer: str, seed: int) -> Trainer:
    lr, wd = best("tiny", optimizer)
    return Trainer(RunConfig(preset=preset, optimizer=optimizer, lr=lr, weight_decay=wd,
                             schedule=expected_schedule(optimizer), seed=seed, device="cpu"),
                   data)


def test_one_seed_is_one_init_data_order_and_noise_across_optimizers(quick_preset, data):
    preset = override(quick_preset, {"model.channels": [8, 16], "train.batch_size": 4,
                                     "train.samples_every": 0})
    runs = {name: trainer(preset, data, name, seed=0) for name in SIX}
    other = trainer(preset, data, "adamw", seed=1)

    def weights(t: Trainer) -> list[torch.Tensor]:
        return [p.detach().clone() for p in t.model.parameters()]

    def batches(t: Trainer) -> list[torch.Tensor]:
        state = t.sampler.state_dict()
        out = [b.clone() for _ in range(2) for b in t.sampler]  # two epochs
        t.sampler.load_state_dict(state)
        return out

    reference = runs["adamw"]
    for name, run in runs.items():
        assert all(torch.equal(a, b) for a, b in zip(weights(run), weights(reference),
                                                     strict=True)), name
        assert all(torch.equal(a, b) for a, b in zip(batches(run), batches(reference),
                                                     strict=True)), name
        assert torch.equal(run.generators["noise"].get_state(),
                           reference.generators["noise"].get_state()), name
    # …and another seed changes all three
    assert not torch.equal(weights(other)[0], weights(reference)[0])
    assert not torch.equal(batches(other)[0], batches(reference)[0])
    assert not torch.equal(other.generators["noise"].get_state(),
                           reference.generators["noise"].get_state())

    # the first step (initial weights, first batch, first noise) gives one loss for all
    first = {}
    for name, run in runs.items():
        steps = next(r for r in run if type(r).__name__ == "Steps")
        first[name] = steps.records[0].loss
    assert len(set(first.values())) == 1, first
