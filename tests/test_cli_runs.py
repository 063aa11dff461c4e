"""`diffbench runs ls/show/export` on a real SQLite file holding finished runs with summaries
and per-epoch metrics (written through storage.queue, as a worker would)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffbench.storage.db import open_database
from diffbench.storage.queue import claim_next, enqueue, finish, record_start
from diffbench.storage.records import add_epoch_metrics
from diffbench.storage.runs import RunSpec
from diffbench.storage.workers import register_worker
from diffbench.tui.cli import app

EDGES = [0.0, 0.5, 0.9, 0.995, 1.0]  # t-bin edges, as the trainer's provenance records them
BINS = [0.02, 0.3, 1.5, 40.0]  # run 1's last epoch, one loss per bin
BIN_COLUMNS = ("t0.00-0.50", "t0.50-0.90", "t0.90-0.995", "t0.995-1.00")
SUMMARY = {"status": "done", "steps": 20, "epochs": 4, "final_train_loss": 0.5,
           "final_valid_loss": 0.6, "final_fixed_valid_loss": 0.55, "best_valid_loss": 0.58,
           "ms_per_step": 12.5, "compute_ms": 10.0, "optimizer_ms": 2.0, "train_s": 3.2,
           "final_fixed_valid_bins": BINS, "loss_bins": EDGES}


def _epoch(epoch: int, loss: float, bins: list[float] | None = None) -> dict[str, object]:
    return {"epoch": epoch, "step": 5 * (epoch + 1), "train_loss": loss, "valid_loss": loss + 0.1,
            "fixed_valid_loss": loss + 0.05, "epoch_s": 1.0, "valid_s": 0.1, "sample_s": 0.0,
            "train_s": 0.8 * (epoch + 1), "fixed_valid_bins": bins}


@pytest.fixture
def url(tmp_path: Path) -> str:
    """Three runs: 1 done (summary, 2 epochs, provenance; per-bin losses on its last epoch),
    2 diverged (NaN loss; from before per-bin losses, like an upgraded database's), 3 queued."""
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    db = open_database(url)
    try:
        enqueue(db, [RunSpec(preset="tiny", optimizer=o, schedule="linear", lr=1e-3,
                             weight_decay=0.01, seed=0, epochs=4) for o in
                     ("adamw", "muon", "sgd")])
        worker = register_worker(db, host="h", pid=1, device="cpu")
        run = claim_next(db, worker.id)
        record_start(db, run.id, worker.id, provenance={"device": "cpu", "git_commit": "abc",
                                                        "loss_bins": EDGES})
        add_epoch_metrics(db, run.id, [_epoch(0, 1.0), _epoch(1, 0.5, BINS)])
        finish(db, run.id, worker.id, "done", summary=SUMMARY, steps_done=20)
        run = claim_next(db, worker.id)
        add_epoch_metrics(db, run.id, [_epoch(0, math.nan)])
        finish(db, run.id, worker.id, "diverged", summary={"final_train_loss": None},
               error="non-finite loss", steps_done=3)
    finally:
        db.dispose()
    return url


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200", "DIFFBENCH_DB": None})


def cli(runner: CliRunner, url: str, *args: str):
    result = runner.invoke(app, ["--db", url, *args])
    return result


def test_ls_table_and_json(runner, url):
    table = cli(runner, url, "runs", "ls")
    assert table.exit_code == 0, table.stderr
    assert "final_train_loss" in table.stdout and "diverged" in table.stdout
    rows = json.loads(cli(runner, url, "runs", "ls", "--json").stdout)
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert rows[0]["final_train_loss"] == 0.5 and rows[0]["ms_per_step"] == 12.5
    assert rows[0]["device"] == "cpu" and rows[0]["git_commit"] == "abc"
    assert rows[0]["summary.epochs"] == 4 and rows[0]["epochs"] == 4
    done = json.loads(cli(runner, url, "runs", "ls", "--status", "done", "--json").stdout)
    assert [r["id"] for r in done] == [1]


def test_ls_queue_ls_and_export_read_one_filter(runner, url, tmp_path):
    """`runs ls`, `queue ls` and `runs export` take the report's --filter grammar."""
    for group in ("runs", "queue"):
        rows = json.loads(cli(runner, url, group, "ls", "-f", "opt:muon,sgd", "--filter",
                              "status:diverged,queued", "--json").stdout)
        assert [r["id"] for r in rows] == [2, 3]
        rows = json.loads(cli(runner, url, group, "ls", "-f", "device:cpu", "--json").stdout)
        assert [r["id"] for r in rows] == [1]
        bad = cli(runner, url, group, "ls", "--filter", "opt:lion")
        assert bad.exit_code == 2 and bad.stdout == ""
        assert "diffbench: error: filter 'opt:lion': unknown optimizer 'lion'" in bad.stderr
    out = tmp_path / "sgd.csv"
    result = cli(runner, url, "runs", "export", str(out), "--filter", "opt:sgd")
    assert result.exit_code == 0, result.stderr
    assert [row["id"] for row in csv.DictReader(out.open())] == ["3"]
    bad = cli(runner, url, "runs", "export", str(tmp_path / "x.csv"), "--filter", "seed:a")
    assert bad.exit_code == 2 and not (tmp_path / "x.csv").exists()


def test_show(runner, url):
    data = json.loads(cli(runner, url, "runs", "show", "1", "--json").stdout)
    assert data["status"] == "done" and data["summary"]["best_valid_loss"] == 0.58
    assert [e["train_loss"] for e in data["epochs"]] == [1.0, 0.5]
    diverged = json.loads(cli(runner, url, "runs", "show", "2", "--json").stdout)
    assert diverged["epochs"][0]["train_loss"] == "NaN"  # as run folders and the database
    table = cli(runner, url, "runs", "show", "1")
    assert table.exit_code == 0 and "best_valid_loss" in table.stdout
    assert "Epochs" in table.stdout
    missing = cli(runner, url, "runs", "show", "9")
    assert missing.exit_code == 2 and missing.stderr.strip() == \
        "diffbench: error: no run with id 9"


def test_export_csv_with_metrics(runner, url, tmp_path):
    out = tmp_path / "results.csv"
    result = cli(runner, url, "runs", "export", str(out), "--metrics")
    assert result.exit_code == 0, result.stderr
    assert "exported 3 runs" in result.stderr and result.stdout == ""
    with out.open() as file:
        rows = list(csv.DictReader(file))
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    for column in ("id", "status", "preset", "optimizer", "schedule", "lr", "wd", "seed",
                   "epochs", "steps_done", "attempts", "final_train_loss", "final_valid_loss",
                   "final_fixed_valid_loss", "best_valid_loss", "ms_per_step", "device",
                   "git_commit", "created_at", "finished_at"):
        assert column in rows[0], column
    assert float(rows[0]["final_train_loss"]) == 0.5 and rows[0]["steps_done"] == "20"
    assert rows[2]["final_train_loss"] == "" and rows[2]["status"] == "queued"
    with (tmp_path / "results-epochs.csv").open() as file:
        epochs = list(csv.DictReader(file))
    assert [(e["run_id"], e["epoch"]) for e in epochs] == [("1", "0"), ("1", "1"), ("2", "0")]
    assert math.isnan(float(epochs[2]["train_loss"]))  # diverged: NaN kept


def test_loss_bins_are_columns_named_by_their_edges(runner, url, tmp_path):
    """Per-bin losses: one column per t-bin named by its edges, per run (final) and per
    epoch, the same in CSV and JSON; empty for old runs and epochs without them."""
    out = tmp_path / "results.csv"
    assert cli(runner, url, "runs", "export", str(out), "--metrics").exit_code == 0
    with out.open() as file:
        rows = list(csv.DictReader(file))
    finals = [f"final_fixed_valid_{c}" for c in BIN_COLUMNS]
    assert [float(rows[0][c]) for c in finals] == BINS
    assert [rows[i][c] for i in (1, 2) for c in finals] == [""] * 8  # diverged, queued
    assert not {"loss_bins", "final_fixed_valid_bins", "provenance.loss_bins"} & rows[0].keys()
    with (tmp_path / "results-epochs.csv").open() as file:
        epochs = list(csv.DictReader(file))
    per_epoch = [f"fixed_valid_{c}" for c in BIN_COLUMNS]
    assert list(epochs[0])[-4:] == per_epoch  # after the epoch fields
    assert [float(epochs[1][c]) for c in per_epoch] == BINS
    assert [epochs[i][c] for i in (0, 2) for c in per_epoch] == [""] * 8

    listed = json.loads(cli(runner, url, "runs", "ls", "--json").stdout)
    assert [listed[0][c] for c in finals] == BINS and finals[0] not in listed[1]
    exported = tmp_path / "results.json"
    assert cli(runner, url, "runs", "export", str(exported), "--metrics").exit_code == 0
    data = json.loads(exported.read_text())
    assert [data[0]["epochs"][1][c] for c in per_epoch] == BINS
    shown = json.loads(cli(runner, url, "runs", "show", "1", "--json").stdout)
    assert shown["epochs"] == data[0]["epochs"]
    assert shown["summary"]["final_fixed_valid_bins"] == BINS
    table = cli(runner, url, "runs", "show", "1").stdout
    assert "by noise level" in table and all(c in table for c in BIN_COLUMNS)
    assert "by noise level" not in cli(runner, url, "runs", "show", "2").stdout


# The columns issue 4 documents for `runs export` (one row per run).
DOCUMENTED_COLUMNS = (
    "id", "status", "preset", "optimizer", "schedule", "lr", "wd", "seed", "epochs",
    "steps_done", "attempts", "final_train_loss", "final_valid_loss", "final_fixed_valid_loss",
    "best_valid_loss", "ms_per_step", "compute_ms", "optimizer_ms", "train_s", "device",
    "git_commit", "created_at", "started_at", "finished_at")


def test_export_csv_opens_in_pandas(runner, url, tmp_path):
    pd = pytest.importorskip("pandas")
    out = tmp_path / "results.csv"
    assert cli(runner, url, "runs", "export", str(out), "--metrics").exit_code == 0
    frame = pd.read_csv(out)
    assert len(frame) == 3 and frame["id"].tolist() == [1, 2, 3]  # one row per run
    assert frame["id"].is_unique
    missing = [c for c in DOCUMENTED_COLUMNS if c not in frame.columns]
    assert not missing, missing
    assert frame["status"].tolist() == ["done", "diverged", "queued"]
    assert frame["optimizer"].tolist() == ["adamw", "muon", "sgd"]
    assert pd.api.types.is_float_dtype(frame["lr"]) and frame["lr"].eq(1e-3).all()
    assert pd.api.types.is_integer_dtype(frame["steps_done"])
    assert frame.loc[0, "final_train_loss"] == 0.5 and frame.loc[0, "ms_per_step"] == 12.5
    assert frame.loc[0, "device"] == "cpu" and frame.loc[0, "git_commit"] == "abc"
    assert frame["final_train_loss"].iloc[1:].isna().all()  # diverged (null) and queued
    assert pd.to_datetime(frame["created_at"]).notna().all()
    epochs = pd.read_csv(tmp_path / "results-epochs.csv")
    assert list(zip(epochs["run_id"], epochs["epoch"], strict=True)) == [(1, 0), (1, 1), (2, 0)]
    assert math.isnan(epochs.loc[2, "train_loss"])


def test_export_json_nests_metrics(runner, url, tmp_path):
    out = tmp_path / "results.json"
    assert cli(runner, url, "runs", "export", str(out), "--metrics").exit_code == 0
    data = json.loads(out.read_text())
    assert [len(r["epochs"]) for r in data] == [2, 1, 0]
    plain = tmp_path / "plain.out"
    assert cli(runner, url, "runs", "export", str(plain), "-f", "json").exit_code == 0
    assert "epochs" in json.loads(plain.read_text())[0]  # the epochs count column
    assert isinstance(json.loads(plain.read_text())[0]["epochs"], int)


def test_export_bad_input(runner, url, tmp_path):
    for args, message in ((["-f", "xlsx"], "--format must be one of"),):
        result = cli(runner, url, "runs", "export", str(tmp_path / "x.csv"), *args)
        assert result.exit_code == 2 and message in result.stderr
    result = cli(runner, url, "runs", "export", str(tmp_path / "nope" / "x.csv"))
    assert result.exit_code == 2 and "does not exist" in result.stderr
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        result = cli(runner, url, "runs", "export", str(tmp_path / "x.parquet"))
        assert result.exit_code == 2 and "needs pyarrow" in result.stderr
        assert not (tmp_path / "x.parquet").exists()


def test_export_parquet_round_trips(runner, url, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "runs.parquet"
    result = cli(runner, url, "runs", "export", str(path), "--metrics")
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(path).to_pylist()
    assert [row["id"] for row in table] == [1, 2, 3]
    assert [row["status"] for row in table] == ["done", "diverged", "queued"]
    assert table[0]["final_fixed_valid_loss"] == 0.55 and table[0]["git_commit"] == "abc"
    epochs = pq.read_table(tmp_path / "runs-epochs.parquet").to_pylist()
    assert [(row["run_id"], row["epoch"]) for row in epochs] == [(1, 0), (1, 1), (2, 0)]
