"""Runs as flat rows: the one schema of `diffbench runs ls/show/export` and the dashboard's
export.

A run's row (`run_row`) holds its id, status, hyperparameters, progress, attempts, every
key of its summary (final/best losses, step times, wall time, …, flattened with dots when
nested), its provenance (device, git commit, …) and its times. Epoch rows (`epoch_rows`)
hold `EPOCH_FIELDS`. The fixed-noise loss per noise level (t-bin) is one column per bin,
named by the bin's edges (`output.t_bin`): ``fixed_valid_t0.90-0.95`` per epoch,
``final_fixed_valid_t0.90-0.95`` per run; runs from before the bins have empty cells.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.engine.metrics import EpochRecord

from ..output import bin_cells, flatten

if TYPE_CHECKING:
    from diffbench.storage.db import Database
    from diffbench.storage.runs import Run

FORMATS = ("csv", "json", "parquet")
BASE = ("id", "status", "preset", "optimizer", "schedule", "lr", "wd", "seed", "epochs",
        "steps_done", "attempts", "priority", "tags")
TIMES = ("created_at", "started_at", "finished_at", "error")
# an epoch record's scalar fields (the per-bin losses are columns of their own: `bin_cells`)
EPOCH_FIELDS = ("run_id", *(f.name for f in dataclasses.fields(EpochRecord)
                            if f.name != "fixed_valid_bins"))
# summary columns `runs ls` shows when present (all of them are in --json and export)
LS_SUMMARY = ("final_train_loss", "final_valid_loss", "final_fixed_valid_loss",
              "best_valid_loss", "ms_per_step")


def run_row(run: Run) -> dict[str, Any]:
    """One flat row per run (see the module docstring)."""
    summary = dict(run.summary or {})
    final_bins = summary.pop("final_fixed_valid_bins", None)
    summary.pop("loss_bins", None)
    provenance = {k: v for k, v in (run.provenance or {}).items() if k != "loss_bins"}
    row: dict[str, Any] = {
        "id": run.id, "status": run.status.value, "preset": run.preset,
        "optimizer": run.optimizer, "schedule": run.schedule, "lr": run.lr,
        "wd": run.weight_decay, "seed": run.seed, "epochs": run.epochs,
        "steps_done": run.steps_done, "attempts": run.attempts, "priority": run.priority,
        "tags": ",".join(run.tags)}
    for key, value in flatten(summary).items():
        row[key if key not in row else f"summary.{key}"] = value
    row.update(bin_cells("final_fixed_valid_", final_bins, run.loss_bins))
    for key, value in flatten(provenance).items():
        row[key if key not in row else f"provenance.{key}"] = value
    row.update(created_at=run.created_at, started_at=run.started_at,
               finished_at=run.finished_at, error=run.error)
    return row


def columns(rows: list[dict[str, Any]]) -> list[str]:
    """The union of the rows' keys: base columns, summary/provenance keys, then times."""
    seen = dict.fromkeys(BASE)
    for row in rows:
        seen.update(dict.fromkeys(k for k in row if k not in TIMES))
    return [*seen, *TIMES]


def epoch_rows(db: Database, run: Run) -> list[dict[str, Any]]:
    """The run's epoch rows: `EPOCH_FIELDS`, then one ``fixed_valid_t…`` cell per t-bin."""
    from diffbench.storage.records import metrics_since

    return [{**{k: v for k, v in dataclasses.asdict(e).items() if k in EPOCH_FIELDS},
             **bin_cells("fixed_valid_", e.fixed_valid_bins, run.loss_bins)}
            for e in metrics_since(db, run.id).epochs]


def epoch_columns(epochs: list[dict[str, Any]]) -> list[str]:
    """`EPOCH_FIELDS`, then the t-bin columns of any row (first-seen order)."""
    return list(dict.fromkeys([*EPOCH_FIELDS, *(k for e in epochs for k in e)]))


def _cell(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def write_csv(path: Path, names: list[str], rows: list[dict[str, Any]]) -> None:
    """One row per run, columns ``names`` (also the dashboard's export)."""
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=names)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(row.get(k)) for k in names})


def write_parquet(path: Path, names: list[str], rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist([{k: _cell(r.get(k)) for k in names} for r in rows])
    pq.write_table(table, path)
