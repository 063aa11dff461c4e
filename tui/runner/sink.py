"""A metrics sink that writes a trainer's records into the job database, in batches.

The trainer already hands steps over in `Steps` batches (one per read-out); this sink
buffers them further and writes one ``INSERT`` per ``batch_rows`` steps or ``batch_s``
seconds, whichever comes first, so logging stays far below 1 % of a step. Everything
buffered is written before an epoch, checkpoint or final record, so the database never
lags a checkpoint: a run resumed from it truncates exactly what the killed attempt wrote
after that checkpoint (`records.truncate_metrics`, on every `StartRecord`: one at step 0
drops what an attempt killed before its first checkpoint wrote).

It also keeps what the run's summary needs (final and best losses, the last epoch's
fixed-noise loss per t-bin with the bins' edges from the start record's provenance, mean step
times, training time, the sample-quality scores under ``"quality"``); on resume it seeds
those from the rows already stored.

Every write is fenced by the run's worker (``worker_id``: `storage.queue.hold_lease`): once
the run is no longer the worker's (its lease expired and the run was requeued or taken),
the write raises `storage.queue.LeaseLost`, and the sink drops what it holds and writes
nothing more.

Storage only here; engine records are matched by their class names' fields, imported lazily.
"""

from __future__ import annotations

import math
import time
from typing import Any

from diffbench.storage import records
from diffbench.storage.db import Database
from diffbench.storage.queue import LeaseLost


class StorageSink:
    """``write(record)`` for every record of one attempt at run ``run_id`` by worker
    ``worker_id`` (required: None writes unfenced, for benchmarks and tests only).

    ``active()`` is asked before each write; when it says False (the heartbeat found the
    lease lost: the run belongs to someone else now) nothing more is written. A write the
    database refuses for the same reason raises `LeaseLost` and sets ``lost``: nothing more
    is written either.
    """

    def __init__(self, db: Database, run_id: int, *, worker_id: int | None,
                 batch_rows: int = 512, batch_s: float = 2.0, active: Any = None) -> None:
        self.db, self.run_id, self.worker_id = db, run_id, worker_id
        self.batch_rows, self.batch_s = batch_rows, batch_s
        self.active = active or (lambda: True)
        self.lost = False
        self.pending: list[Any] = []
        self.last_write = time.monotonic()
        self.start: Any = None
        self.status: Any = None
        self.step = 0
        # summary aggregates
        self.n_steps = 0
        self.ms = {"data_ms": 0.0, "compute_ms": 0.0, "optimizer_ms": 0.0}
        self.last_loss = math.nan
        self.final_epoch: Any = None
        self.best_valid: float | None = None
        self.best_fixed: float | None = None
        self.quality: dict[str, Any] | None = None  # `QualityScores.to_dict()` of a finished run

    # ------------------------------------------------------------------ records

    def write(self, record: Any) -> None:
        if self.lost or not self.active():
            return
        try:
            self._write(record)
        except LeaseLost:
            self.lost, self.pending = True, []
            raise

    def _write(self, record: Any) -> None:
        from diffbench.engine.metrics import (
            CheckpointRecord,
            EpochRecord,
            QualityRecord,
            SampleRecord,
            StartRecord,
            StatusRecord,
            Steps,
        )

        match record:
            case StartRecord():
                self.start = record
                self.step = record.step
                # also at step 0: an attempt killed before its first checkpoint may have
                # written steps and an epoch, which this one writes again
                records.truncate_metrics(self.db, self.run_id, record.step,
                                         worker_id=self.worker_id)
                if record.step > 0:
                    self._seed_from_database()
            case Steps(records=steps):
                self.pending.extend(steps)
                for s in steps:
                    self.n_steps += 1
                    for key in self.ms:
                        self.ms[key] += getattr(s, key)
                    self.last_loss = s.loss
                self.step = steps[-1].step
                if (len(self.pending) >= self.batch_rows
                        or time.monotonic() - self.last_write >= self.batch_s):
                    self.flush()
            case EpochRecord():
                self.flush()
                records.add_epoch_metrics(self.db, self.run_id, [record],
                                          worker_id=self.worker_id)
                self._epoch(record)
            case SampleRecord():
                self.flush()
                records.add_sample(self.db, self.run_id, epoch=record.epoch, step=record.step,
                                   array=record.vorticity, name=record.name,
                                   worker_id=self.worker_id)
            case CheckpointRecord():
                self.flush()
            case QualityRecord():
                self.quality = record.scores
            case StatusRecord():
                self.flush()
                self.status = record

    def flush(self) -> None:
        """Write the buffered steps (`LeaseLost` if the run is no longer this worker's)."""
        if self.pending and not self.lost and self.active():
            try:
                records.add_step_metrics(self.db, self.run_id, self.pending,
                                         worker_id=self.worker_id)
            except LeaseLost:
                self.lost, self.pending = True, []
                raise
        self.pending = []
        self.last_write = time.monotonic()

    # ------------------------------------------------------------------ summary

    def _epoch(self, record: Any) -> None:
        self.final_epoch = record
        if record.valid_loss is not None and math.isfinite(record.valid_loss):
            self.best_valid = (record.valid_loss if self.best_valid is None
                               else min(self.best_valid, record.valid_loss))
        if record.fixed_valid_loss is not None and math.isfinite(record.fixed_valid_loss):
            self.best_fixed = (record.fixed_valid_loss if self.best_fixed is None
                               else min(self.best_fixed, record.fixed_valid_loss))

    def _seed_from_database(self) -> None:
        """A resumed attempt: the aggregates of the steps and epochs kept from before."""
        batch = records.metrics_since(self.db, self.run_id)
        for s in batch.steps:
            self.n_steps += 1
            self.ms["data_ms"] += s.data_ms
            self.ms["compute_ms"] += s.compute_ms
            self.ms["optimizer_ms"] += s.optimizer_ms
            self.last_loss = s.loss
        for e in batch.epochs:
            self._epoch(e)

    def summary(self) -> dict[str, Any]:
        """The run's summary metrics (JSON-ready; non-finite numbers as None, except inside
        ``"quality"``, present once the run has been assessed, and the per-bin losses).

        ``final_fixed_valid_bins`` is the last epoch's loss per t-bin (None when that epoch
        did not validate), ``loss_bins`` the bins' edges (`engine.diffusion.LOSS_BINS` as the
        run's provenance recorded them).
        """
        n = max(self.n_steps, 1)
        data, compute, opt = (self.ms[k] / n for k in ("data_ms", "compute_ms",
                                                       "optimizer_ms"))
        epoch = self.final_epoch
        values = {
            "status": None if self.status is None else self.status.state,
            "message": None if self.status is None else self.status.message,
            "steps": self.step,
            "epochs": None if epoch is None else epoch.epoch + 1,
            "final_train_loss": None if epoch is None else epoch.train_loss,
            "final_valid_loss": None if epoch is None else epoch.valid_loss,
            "final_fixed_valid_loss": None if epoch is None else epoch.fixed_valid_loss,
            "best_valid_loss": self.best_valid,
            "best_fixed_valid_loss": self.best_fixed,
            "last_step_loss": self.last_loss,
            "ms_per_step": data + compute + opt if self.n_steps else None,
            "data_ms": data if self.n_steps else None,
            "compute_ms": compute if self.n_steps else None,
            "optimizer_ms": opt if self.n_steps else None,
            "train_s": None if epoch is None else epoch.train_s,
        }
        summary = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                   for k, v in values.items()}
        bins = None if epoch is None else epoch.fixed_valid_bins
        summary["final_fixed_valid_bins"] = None if bins is None else list(bins)
        edges = None if self.start is None else self.start.provenance.get("loss_bins")
        summary["loss_bins"] = None if edges is None else list(edges)
        if self.quality is not None:  # floats kept as they are: a NaN score is a result
            summary["quality"] = self.quality
        return summary
