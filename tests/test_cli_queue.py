"""`diffbench queue …` and `diffbench db upgrade` on real SQLite files: the product, duplicates,
dry runs, bad input (exit 2, one line, the database byte-for-byte unchanged), ls/cancel/
retry/rm, and an import path free of torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_checks import assert_one_line_error
from typer.testing import CliRunner

from diffbench.storage.db import open_database
from diffbench.storage.queue import claim_next, finish, list_runs
from diffbench.storage.workers import register_worker
from diffbench.tui.cli import app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None,
                          "DIFFBENCH_HOME": None, "DIFFBENCH_PRESET": None})


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


def cli(runner: CliRunner, url: str, *args: str):
    return runner.invoke(app, ["--db", url, *args])


def runs(url: str):
    db = open_database(url)
    try:
        return list_runs(db)
    finally:
        db.dispose()


# ----------------------------------------------------------------------------- add


def test_add_queues_the_cartesian_product(runner, url):
    result = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw,muon",
                 "--schedule", "linear", "--schedule", "cosine", "--lr", "1e-3,2e-3",
                 "--seeds", "0-1,5", "--tag", "grid", "--priority", "3")
    assert result.exit_code == 0, result.stderr
    ids = [int(line) for line in result.stdout.split()]
    assert ids == list(range(1, 2 * 2 * 2 * 3 + 1))
    stored = runs(url)
    assert [r.id for r in stored] == ids
    assert {(r.optimizer, r.schedule, r.lr, r.seed) for r in stored} == {
        (o, s, lr, seed) for o in ("adamw", "muon") for s in ("linear", "cosine")
        for lr in (1e-3, 2e-3) for seed in (0, 1, 5)}
    assert all(r.epochs == 4 and r.priority == 3 and r.tags == ("grid",) for r in stored)
    assert {r.weight_decay for r in stored if r.optimizer == "muon"} == {0.032}  # preset's


def test_defaults_come_from_the_preset_and_duplicates_are_skipped(runner, url):
    first = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw")
    assert first.exit_code == 0 and first.stdout.split() == ["1"]
    (run,) = runs(url)
    assert (run.lr, run.weight_decay, run.seed, run.epochs, run.schedule) == \
        (4.5e-4, 1e-2, 0, 4, "linear")
    # the same run spelled out (explicit lr, epochs = the preset's) is a duplicate
    again = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw,sgd",
                "--lr", "0.00045", "--wd", "1e-2", "--epochs", "4", "--json")
    assert again.exit_code == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["ids"] == [2] and data["runs"][0]["optimizer"] == "sgd"
    assert [s["duplicate_of"] for s in data["skipped"]] == [1]
    assert "duplicates run 1" in again.stderr
    forced = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw",
                 "--allow-duplicates")
    assert forced.stdout.split() == ["3"] and len(runs(url)) == 3


def test_schedulefree_is_queued_once_as_constant(runner, url):
    """ScheduleFree takes no external schedule: whatever is asked, it trains "constant", so
    it is queued once per setting and a later "constant" spelling is its duplicate."""
    result = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw,schedulefree",
                 "--schedule", "linear,cosine")
    assert result.exit_code == 0, result.stderr
    assert sorted((r.optimizer, r.schedule) for r in runs(url)) == [
        ("adamw", "cosine"), ("adamw", "linear"), ("schedulefree", "constant")]
    again = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "schedulefree",
                "--schedule", "constant")
    assert again.exit_code == 0 and again.stdout.split() == [] and len(runs(url)) == 3


def test_set_overrides_are_validated_and_stored(runner, url):
    result = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "sgd",
                 "--set", "train.batch_size=4", "--set", "train.epochs=2")
    assert result.exit_code == 0, result.stderr
    (run,) = runs(url)
    assert run.overrides == {"train.batch_size": 4} and run.epochs == 2


def test_run_settings_are_set_for_queued_runs(runner, url, tmp_path):
    """Undotted --set keys are the run's (precision, layout, compile), and a worker's
    `RunConfig` of the run has them."""
    from diffbench.tui.runner.worker import run_config

    result = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw",
                 "--set", "precision=bf16", "--set", "compile=true",
                 "--set", "channels_last=false", "--set", "cuda_graph=true")
    assert result.exit_code == 0, result.stderr
    (run,) = runs(url)
    config = run_config(run, "cpu")
    assert (config.precision, config.compile, config.channels_last, config.cuda_graph) == \
        ("bf16", True, False, True)
    assert config.preset.train.epochs == run.epochs


def test_a_queued_run_trains_as_queued_not_as_its_preset_file_reads_later(runner, url,
                                                                          tmp_path):
    """Each run is resolved once, when queued: editing the preset file afterwards changes
    nothing a worker trains, and a queued bf16 run trains in bf16 (the worker's start record
    stores the config it trained)."""
    from diffbench.storage.db import open_database
    from diffbench.storage.queue import list_runs
    from diffbench.storage.workspace import Workspace
    from diffbench.tui.runner.worker import Worker, run_config
    from tests.helpers import preset_toml, quick

    toml = tmp_path / "mine.toml"
    toml.write_text(preset_toml(quick(**{"train.epochs": 1, "train.samples_every": 0,
                                         "quality.enabled": False})))
    result = cli(runner, url, "queue", "add", "-p", str(toml), "-O", "adamw",
                 "--set", "precision=bf16")
    assert result.exit_code == 0, result.stderr
    toml.write_text(preset_toml(quick(**{"train.epochs": 1, "train.samples_every": 0,
                                         "quality.enabled": False, "train.batch_size": 2,
                                         "model.channels": [4, 8]})))
    (run,) = runs(url)
    config = run_config(run, "cpu")
    assert (config.precision, config.preset.train.batch_size,
            config.preset.model.channels) == ("bf16", 4, (8, 16))
    db = open_database(url)
    try:
        assert Worker(db, Workspace.resolve(tmp_path / "home"), device="cpu").serve(
            max_runs=1) == 0
        (done,) = list_runs(db)
    finally:
        db.dispose()
    assert done.status == "done", done.error
    assert done.config["precision"] == "bf16" and done.config["device"] == "cpu"
    assert done.config["preset"]["train"]["batch_size"] == 4
    assert done.config["preset"]["model"]["channels"] == [8, 16]


def test_dry_run_writes_nothing(runner, url, tmp_path):
    result = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw,soap",
                 "--seeds", "0,3", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dry_run"] and len(data["runs"]) == 4
    assert not (tmp_path / "jobs.db").exists()
    table = cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw", "--dry-run")
    assert "would queue 1 runs" in table.stdout and not (tmp_path / "jobs.db").exists()


BAD_ADD = [
    (["-O", "adam"], "unknown optimizer 'adam'"),
    ([], "--optimizer is required"),
    (["-O", "adamw", "--schedule", "cosin"], "unknown schedule 'cosin'"),
    (["-O", "adamw", "--lr", "0"], "--lr must be a positive number"),
    (["-O", "adamw", "--lr", "-1e-3"], "--lr must be a positive number"),
    (["-O", "adamw", "--lr", "abc"], "'abc' is not a number"),
    (["-O", "adamw", "--lr", "nan"], "--lr must be a positive number, got nan"),
    (["-O", "adamw", "--wd", "-0.1"], "--wd must be a non-negative number"),
    (["-O", "adamw", "--seeds", "3-1"], "empty range '3-1'"),
    (["-O", "adamw", "--seeds", "x"], "'x' is not a seed"),
    (["-O", "adamw", "--seeds", "-1"], "'-1' is not a seed"),
    (["-O", "adamw", "--epochs", "0"], "--epochs must be positive"),
    (["-O", "adamw", "--set", "model.nope=1"], "unknown key model.nope"),
    (["-O", "adamw", "--set", "novalue"], "--set takes key=value"),
    (["-O", "adamw", "--set", "train.batch_size=-3"], "train.batch_size must be positive"),
    (["-O", "adamw", "--set", "train.epochs=2", "--epochs", "3"], "contradicts"),
    (["-O", "adamw", "-p", "huge"], "unknown preset 'huge'"),
    (["-O", "adamw", "--set", "precision=fp16"], "--set precision takes fp32 or bf16"),
    (["-O", "adamw", "--set", "compile=1"], "--set compile takes true or false"),
]


@pytest.mark.parametrize(("args", "message"), BAD_ADD, ids=[m for _, m in BAD_ADD])
def test_bad_input_exits_2_and_leaves_the_database_unchanged(runner, url, tmp_path, args,
                                                             message):
    assert cli(runner, url, "queue", "add", "-p", "tiny", "-O", "sgd").exit_code == 0
    before = (tmp_path / "jobs.db").read_bytes()
    preset = [] if "-p" in args else ["-p", "tiny"]
    assert_one_line_error(cli(runner, url, "queue", "add", *preset, *args), message)
    assert (tmp_path / "jobs.db").read_bytes() == before


def test_unreachable_database_exits_2(runner, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = runner.invoke(app, ["--db", f"sqlite:///{blocker}/x.db", "queue", "ls"])
    assert_one_line_error(result, "cannot open database")
    assert_one_line_error(runner.invoke(app, ["--db", "nosuchdb://x", "queue", "ls"]))
    nobody = runner.invoke(app, ["--db", "postgresql://nobody@127.0.0.1:1/x", "queue", "ls"])
    assert_one_line_error(nobody, "cannot use database", "127.0.0.1", "port 1")
    assert "sqlalche.me" not in nobody.stderr  # the driver's reason, not SQLAlchemy's link


# ----------------------------------------------------------------------- ls, cancel, retry, rm


def _finish_first(url: str, status: str = "failed") -> int:
    db = open_database(url)
    try:
        worker = register_worker(db, host="h", pid=1, device="cpu")
        run = claim_next(db, worker.id)
        finish(db, run.id, worker.id, status, error="boom")
        return run.id
    finally:
        db.dispose()


def test_ls_cancel_retry_rm(runner, url, tmp_path):
    assert cli(runner, url, "queue", "add", "-p", "tiny", "-O", "adamw",
               "--seeds", "0-3").exit_code == 0
    failed = _finish_first(url)
    listing = json.loads(cli(runner, url, "queue", "ls", "--json").stdout)
    assert [r["status"] for r in listing] == ["failed", "queued", "queued", "queued"]
    only = json.loads(cli(runner, url, "queue", "ls", "--status", "queued", "--json").stdout)
    assert [r["id"] for r in only] == [2, 3, 4]
    table = cli(runner, url, "queue", "ls")
    assert "adamw" in table.stdout and "failed" in table.stdout

    cancelled = cli(runner, url, "queue", "cancel", "2", "3")
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout
    retried = cli(runner, url, "queue", "retry", str(failed), "2", "--json")
    assert json.loads(retried.stdout) == [{"id": 1, "outcome": "queued"},
                                          {"id": 2, "outcome": "queued"}]
    assert cli(runner, url, "queue", "rm", "3", "4").exit_code == 0
    assert [(r.id, r.status.value) for r in runs(url)] == [(1, "queued"), (2, "queued")]

    before = (tmp_path / "jobs.db").read_bytes()
    for action in ("cancel", "retry", "rm"):
        assert_one_line_error(cli(runner, url, "queue", action, "1", "99"), "no run with id 99")
    assert_one_line_error(cli(runner, url, "queue", "retry", "1"), "cannot go from queued")
    assert_one_line_error(cli(runner, url, "queue", "ls", "--status", "bogus"),
                          "unknown status 'bogus'")
    assert (tmp_path / "jobs.db").read_bytes() == before
    assert [(r.id, r.status.value) for r in runs(url)] == [(1, "queued"), (2, "queued")]


def test_home_holds_the_default_database(runner, tmp_path):
    result = runner.invoke(app, ["--home", str(tmp_path), "queue", "add", "-p", "tiny",
                                 "-O", "sgd"])
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "diffbench.db").is_file()


# ----------------------------------------------------------------------------- db upgrade


def test_db_upgrade_creates_and_reports(runner, url):
    first = cli(runner, url, "db", "upgrade", "--json")
    assert first.exit_code == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["before"] is None and data["after"]
    again = json.loads(cli(runner, url, "db", "upgrade", "--json").stdout)
    assert again["before"] == again["after"] == data["after"]


def test_db_from_a_newer_diffbench_is_refused(runner, url, tmp_path):
    assert cli(runner, url, "db", "upgrade").exit_code == 0
    import sqlite3

    with sqlite3.connect(tmp_path / "jobs.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")
    assert_one_line_error(cli(runner, url, "db", "upgrade"), "newer")
    assert_one_line_error(cli(runner, url, "queue", "ls"), "newer")


# ----------------------------------------------------------------------------- import hygiene


def test_queue_add_imports_no_torch(tmp_path):
    code = (
        "import sys\n"
        "import diffbench.tui.cli as cli\n"
        "assert not [m for m in ('torch', 'textual') if m in sys.modules]\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(cli.app, ['queue', 'add', '--help'])\n"
        "assert r.exit_code == 0, r.output\n"
        f"r = CliRunner().invoke(cli.app, ['--db', 'sqlite:///{tmp_path}/j.db', 'queue', "
        "'add', '-p', 'tiny', '-O', 'adamw,muon', '--seeds', '0-2'])\n"
        "assert r.exit_code == 0, r.output\n"
        "bad = [m for m in ('torch', 'textual') if m in sys.modules]\n"
        "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_console_script_end_to_end(tmp_path):
    exe = Path(sys.executable).with_name("diffbench")
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {"PATH": str(exe.parent), "NO_COLOR": "1", "HOME": str(tmp_path)}
    done = subprocess.run([str(exe), "--db", url, "queue", "add", "-p", "tiny", "-O", "sgd",
                           "--seeds", "0-1", "--json"], capture_output=True, text=True,
                          env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ids"] == [1, 2]
    bad = subprocess.run([str(exe), "--db", url, "queue", "add", "-O", "adam"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- sweep files


SWEEP_TOML = ('preset = "tiny"\nseeds = "0-1"\n\n'
              '[[grid]]\noptimizer = ["adamw", "muon"]\nlr = [1e-3, 3e-3]\n\n'
              '[[grid]]\noptimizer = "sgd"\nschedule = ["cosine", "wsd"]\n'
              'set = { "train.batch_size" = 4 }\n')
# The same sweep in YAML; 1e-3 without a dot is a string to YAML 1.1, read as a number here.
SWEEP_YAML = ("preset: tiny\nseeds: 0-1\ngrid:\n"
              "  - optimizer: [adamw, muon]\n    lr: [1e-3, 3.0e-3]\n"
              "  - optimizer: sgd\n    schedule:\n      - cosine\n      - wsd\n"
              "    set:\n      train.batch_size: 4\n")


def test_sweep_file_union_of_grids(runner, url, tmp_path):
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP_TOML)
    result = cli(runner, url, "queue", "add", "--sweep", str(sweep), "--tag", "s1")
    assert result.exit_code == 0, result.stderr
    stored = runs(url)
    assert len(stored) == 2 * 2 * 2 + 2 * 2
    sgd = [r for r in stored if r.optimizer == "sgd"]
    assert {r.schedule for r in sgd} == {"cosine", "wsd"}
    assert all(r.overrides == {"train.batch_size": 4} and r.lr == 1e-2 for r in sgd)
    assert all(r.tags == ("s1",) and r.seed in (0, 1) for r in stored)
    again = cli(runner, url, "queue", "add", "--sweep", str(sweep), "--tag", "s1")
    assert again.stdout == "" and "skipped 12 duplicates" in again.stderr


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_sweep_queues_the_same_runs_as_toml(runner, tmp_path, suffix):
    def queued(name: str, text: str) -> list[tuple]:
        sweep = tmp_path / name
        sweep.write_text(text)
        url = f"sqlite:///{tmp_path / (name + '.db')}"
        result = cli(runner, url, "queue", "add", "--sweep", str(sweep), "--tag", "s1")
        assert result.exit_code == 0, result.stderr
        return [(r.id, r.preset, r.optimizer, r.schedule, r.lr, r.weight_decay, r.seed,
                 r.epochs, r.overrides, r.priority, r.tags) for r in runs(url)]

    toml_runs = queued("sweep.toml", SWEEP_TOML)
    assert len(toml_runs) == 12
    assert queued("sweep" + suffix, SWEEP_YAML) == toml_runs


BAD_SWEEPS = [
    ("optimizer = [", "invalid TOML"),
    ('optimizer = "adamw"\nbogus = 1', "unknown key 'bogus'"),
    ('optimizer = "adam"', "unknown optimizer 'adam'"),
    ('optimizer = "adamw"\nlr = [0.0]', "lr must be a positive number"),
    ('optimizer = "adamw"\nseeds = "3-1"', "empty range"),
    ('optimizer = "adamw"\nset = { "model.nope" = 1 }', "unknown key model.nope"),
    ('optimizer = "adamw"\nepochs = "four"', "epochs must be an integer"),
    ("grid = 3", "grid must be a list of tables"),
]


BAD_YAML_SWEEPS = [
    ("optimizer: [", "invalid YAML"),
    ("optimizer: adamw\nlr: [1e-3\nseeds: 0", "invalid YAML"),
    ("optimizer:\n\t- adamw", "invalid YAML"),
    ("optimizer: adamw\n  seeds: 0", "invalid YAML"),
    ("- adamw\n- muon", "must be a mapping"),
    ("", "must be a mapping"),
    ("optimizer: adamw\nbogus: 1", "unknown key 'bogus'"),
    ("grid:\n  - optimizer: adamw\n  - optimizer: sgd\n    lrr: 1", "grid 2: unknown key 'lrr'"),
    ("optimizer: adamw\nepochs: four", "epochs must be an integer"),
    ("optimizer: adamw\npriority: true", "priority must be an integer"),
    ("optimizer: adamw\npreset: [tiny, small]", "preset takes one value"),
    ("optimizer: adamw\nset: [train.batch_size]", "set must be a table"),
    ("optimizer: adamw\nlr: -1e-3", "lr must be a positive number"),
    ("grid: {optimizer: adamw}", "grid must be a list"),
]
SWEEP_CASES = ([(".toml", text, message) for text, message in BAD_SWEEPS]
               + [(".yaml", text, message) for text, message in BAD_YAML_SWEEPS])


@pytest.mark.parametrize(("suffix", "text", "message"), SWEEP_CASES,
                         ids=[f"{s[1:]}: {m}" for s, _, m in SWEEP_CASES])
def test_bad_sweep_files_exit_2_and_change_nothing(runner, url, tmp_path, suffix, text,
                                                   message):
    assert cli(runner, url, "queue", "add", "-p", "tiny", "-O", "sgd").exit_code == 0
    before = (tmp_path / "jobs.db").read_bytes()
    sweep = tmp_path / f"bad{suffix}"
    sweep.write_text(text)
    assert_one_line_error(cli(runner, url, "queue", "add", "-p", "tiny", "--sweep",
                              str(sweep)), message)
    assert (tmp_path / "jobs.db").read_bytes() == before
