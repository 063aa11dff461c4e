"""The metric tables follow the engine's records: every field of a `StepRecord` or
`EpochRecord` is a column, is written and comes back, so a new metric is a field, a column
and a migration (and this test names a missing column)."""

from __future__ import annotations

import dataclasses
import math

from diffbench.engine.metrics import EpochRecord, StepRecord
from diffbench.storage import queue, records, workers
from diffbench.storage.db import open_database
from diffbench.storage.runs import RunSpec
from diffbench.storage.schema import EpochMetricRow, StepMetricRow


def test_every_record_field_is_a_column_and_comes_back(tmp_path):
    for record, table in ((StepRecord, StepMetricRow), (EpochRecord, EpochMetricRow)):
        missing = [f.name for f in dataclasses.fields(record) if f.name not in table.__table__.c]
        assert not missing, f"{table.__tablename__} lacks columns for {missing}"
    step = StepRecord(step=1, epoch=0, loss=math.inf, lr=1e-3, grad_norm=math.nan, data_ms=1.0,
                      compute_ms=2.0, optimizer_ms=3.0)
    epoch = EpochRecord(epoch=0, step=1, train_loss=0.5, valid_loss=None,
                        fixed_valid_loss=0.4, epoch_s=1.0, valid_s=0.1, sample_s=0.0,
                        train_s=1.0, fixed_valid_bins=(0.3, math.nan))
    db = open_database(f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        (run_id,) = queue.enqueue(db, [RunSpec("tiny", "adamw", "linear", 1e-3, 0.0, 0)]).ids
        worker = workers.register_worker(db, host="h", pid=1, device="cpu")
        queue.claim_next(db, worker.id)
        records.add_step_metrics(db, run_id, [step])
        records.add_epoch_metrics(db, run_id, [epoch])
        batch = records.metrics_since(db, run_id)
    finally:
        db.dispose()
    (got_step,), (got_epoch,) = batch.steps, batch.epochs
    assert isinstance(got_step, StepRecord) and got_step.run_id == run_id
    assert got_step.loss == math.inf and math.isnan(got_step.grad_norm)
    assert dataclasses.replace(got_step, grad_norm=0.0) == dataclasses.replace(
        records.StepMetric(**dataclasses.asdict(step), id=got_step.id, run_id=run_id),
        grad_norm=0.0)
    assert got_epoch.valid_loss is None and got_epoch.fixed_valid_bins[0] == 0.3
    assert math.isnan(got_epoch.fixed_valid_bins[1]) and got_epoch.train_s == 1.0
