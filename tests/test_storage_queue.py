"""The queue's functions on a real SQLite file and a real PostgreSQL database (see
tests/postgres_db.py; skipped without a server): claims, leases (explicit times, no
sleeps), cancel/retry/remove, duplicates, non-finite metrics, polling, and real concurrent
claims."""

from __future__ import annotations

import datetime as dt
import math
import multiprocessing

import numpy as np
import pytest

from diffbench.engine.metrics import EpochRecord
from diffbench.storage import queue as q
from diffbench.storage import records, workers
from diffbench.storage.db import NotFound, open_database
from diffbench.storage.states import IllegalTransition, Status

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def spec(seed: int = 0, **changes) -> q.RunSpec:
    values = dict(preset="tiny", optimizer="adamw", schedule="linear", lr=1e-3,
                  weight_decay=0.01, seed=seed)
    values.update(changes)
    return q.RunSpec(**values)


@pytest.fixture
def worker(db):
    return workers.register_worker(db, host="host", pid=123, device="cpu", now=T0)


def test_enqueue_skips_duplicates(db):
    first = q.enqueue(db, [spec(0), spec(1), spec(0, lr=0.001)], now=T0)  # 1e-3 == 0.001
    assert first.ids == (1, 2)
    assert first.skipped == ((spec(0, lr=0.001), 1),)
    second = q.enqueue(db, [spec(0), spec(2), spec(0, overrides={"train.epochs": 3})])
    assert second.ids == (3, 4)
    assert [s.seed for s, _ in second.skipped] == [0]
    forced = q.enqueue(db, [spec(0)], allow_duplicates=True)
    assert forced.ids == (5,)


def test_failed_and_cancelled_runs_do_not_block_duplicates(db, worker):
    (run_id,) = q.enqueue(db, [spec()]).ids
    q.cancel(db, [run_id])
    assert q.enqueue(db, [spec()]).ids == (2,)


def test_enqueue_validates_before_writing(db):
    with pytest.raises(Exception, match="lr must be a positive"):
        q.enqueue(db, [spec(0), spec(1, lr=-1.0)])
    assert q.list_runs(db) == []


def test_claim_order_and_lease(db, worker):
    q.enqueue(db, [spec(0), spec(1, priority=5), spec(2)], now=T0)
    run = q.claim_next(db, worker.id, lease_s=30, now=at(1))
    assert (run.id, run.status, run.attempts, run.worker_id) == (2, Status.RUNNING, 1, worker.id)
    assert run.started_at == at(1) and run.lease_expires_at == at(31)
    assert [q.claim_next(db, worker.id, now=at(2)).id for _ in range(2)] == [1, 3]
    assert q.claim_next(db, worker.id, now=at(3)) is None


def test_claim_uses_database_clock_by_default(db, worker):
    q.enqueue(db, [spec()])
    now = workers.database_now(db)
    run = q.claim_next(db, worker.id, lease_s=60)
    assert abs((run.started_at - now).total_seconds()) < 5
    assert abs((run.lease_expires_at - run.heartbeat_at).total_seconds() - 60) < 1e-3


def test_heartbeat_extends_lease_and_stale_runs_requeue(db, worker):
    q.enqueue(db, [spec()], now=T0)
    run = q.claim_next(db, worker.id, lease_s=30, now=at(0))
    lease = q.heartbeat(db, worker.id, run.id, lease_s=30, now=at(20))
    assert lease == q.Lease(lost=False, cancel_requested=False, expires_at=at(50))
    assert q.requeue_stale(db, now=at(45)) == ()
    assert q.requeue_stale(db, now=at(51)) == (run.id,)
    requeued = q.get_run(db, run.id)
    assert requeued.status == Status.QUEUED and requeued.worker_id is None
    assert "lease expired" in requeued.error
    # the lost worker learns it at its next heartbeat, and may not finish the run
    assert q.heartbeat(db, worker.id, run.id, now=at(52)).lost
    with pytest.raises(IllegalTransition):
        q.finish(db, run.id, worker.id, "done")
    other = workers.register_worker(db, host="other", pid=2, device="cpu", now=at(52))
    again = q.claim_next(db, other.id, now=at(53))
    assert (again.id, again.attempts, again.started_at) == (run.id, 2, at(0))
    with pytest.raises(IllegalTransition, match="not leased to worker"):
        q.finish(db, run.id, worker.id, "done")
    done = q.finish(db, run.id, other.id, "done", summary={"final": 0.5}, now=at(60))
    assert (done.status, done.finished_at, done.lease_expires_at) == (Status.DONE, at(60), None)


def test_max_attempts_fails_a_run_that_keeps_losing_workers(db, worker):
    q.enqueue(db, [spec()])
    for attempt in range(3):
        q.claim_next(db, worker.id, lease_s=10, now=at(100 * attempt))
        q.requeue_stale(db, now=at(100 * attempt + 11), max_attempts=3)
    run = q.get_run(db, 1)
    assert (run.status, run.attempts) == (Status.FAILED, 3)


def test_cancel_queued_and_running(db, worker):
    q.enqueue(db, [spec(0), spec(1), spec(2)])
    running = q.claim_next(db, worker.id, now=T0)
    q.finish(db, q.claim_next(db, worker.id, now=T0).id, worker.id, "done")
    outcome = q.cancel(db, [1, 2, 3])
    assert outcome == {1: "requested", 2: "unchanged", 3: "cancelled"}
    assert q.get_run(db, running.id).status == Status.RUNNING
    assert q.heartbeat(db, worker.id, running.id, now=at(1)).cancel_requested
    assert q.finish(db, running.id, worker.id, "cancelled").status == Status.CANCELLED


def test_unknown_ids_change_nothing(db):
    q.enqueue(db, [spec(0)])
    with pytest.raises(NotFound, match="no run with id 7, 9"):
        q.cancel(db, [1, 7, 9])
    assert q.get_run(db, 1).status == Status.QUEUED
    with pytest.raises(NotFound):
        q.get_run(db, 7)


def test_release_retry_remove(db, worker):
    q.enqueue(db, [spec(0), spec(1)])
    first = q.claim_next(db, worker.id, now=T0)
    released = q.release(db, first.id, worker.id, reason="SIGTERM")
    assert (released.status, released.attempts, released.error) == (Status.QUEUED, 1, "SIGTERM")
    run = q.claim_next(db, worker.id, now=T0)
    failed = q.finish(db, run.id, worker.id, "failed", error="boom", traceback="Traceback …")
    assert failed.traceback == "Traceback …"
    other = q.claim_next(db, worker.id, now=T0)
    with pytest.raises(IllegalTransition, match="running"):
        q.retry(db, [failed.id, other.id])  # all or none
    assert q.get_run(db, failed.id).status == Status.FAILED
    q.finish(db, other.id, worker.id, "done")
    with pytest.raises(IllegalTransition, match="from done to queued"):
        q.retry(db, [other.id])
    assert q.retry(db, [failed.id]) == (failed.id,)
    retried = q.get_run(db, failed.id)
    assert (retried.status, retried.error, retried.traceback) == (Status.QUEUED, None, None)
    records.add_step_metrics(db, other.id, [_step(1)])
    assert q.remove(db, [other.id]) == (other.id,)
    assert records.metrics_since(db, other.id).steps == ()  # cascaded
    running = q.claim_next(db, worker.id, now=T0)
    with pytest.raises(IllegalTransition, match="cancel it first"):
        q.remove(db, [running.id])


def test_finish_refuses_non_final_status_and_queued_runs(db, worker):
    q.enqueue(db, [spec()])
    with pytest.raises(IllegalTransition, match="queued, not running"):
        q.finish(db, 1, None, "done")
    q.claim_next(db, worker.id)
    with pytest.raises(IllegalTransition, match="final status"):
        q.finish(db, 1, worker.id, "queued")


def _step(step: int, loss: float = 0.5, grad_norm: float = 1.0) -> dict:
    return dict(step=step, epoch=0, loss=loss, lr=1e-3, grad_norm=grad_norm, data_ms=0.1,
                compute_ms=2.0, optimizer_ms=0.5)


def test_non_finite_metrics_round_trip(db, worker):
    (run_id,) = q.enqueue(db, [spec()]).ids
    q.claim_next(db, worker.id)
    records.add_step_metrics(db, run_id, [_step(1, math.nan, math.inf), _step(2, -math.inf, 3.0),
                                    _step(3, 0.25, math.nan)])
    steps = records.metrics_since(db, run_id).steps
    assert math.isnan(steps[0].loss) and steps[0].grad_norm == math.inf
    assert steps[1].loss == -math.inf and steps[1].grad_norm == 3.0
    assert steps[2].loss == 0.25 and math.isnan(steps[2].grad_norm)
    records.add_epoch_metrics(db, run_id, [dict(epoch=0, step=3, train_loss=math.nan,
                                          valid_loss=None, fixed_valid_loss=math.inf,
                                          epoch_s=1.0, valid_s=0.0, sample_s=0.0,
                                          train_s=1.0)])
    (epoch,) = records.metrics_since(db, run_id).epochs
    assert math.isnan(epoch.train_loss) and epoch.valid_loss is None
    assert epoch.fixed_valid_loss == math.inf and epoch.fixed_valid_bins is None
    summary = {"final_loss": math.nan, "best": -math.inf, "nested": [math.inf, 1.0]}
    done = q.finish(db, run_id, worker.id, "diverged", summary=summary)
    assert math.isnan(done.summary["final_loss"]) and done.summary["best"] == -math.inf
    assert done.summary["nested"] == [math.inf, 1.0]
    assert q.get_run(db, run_id).steps_done == 3


def test_epoch_loss_bins_round_trip(db, worker):
    """Per-bin losses from an `EpochRecord` (a tuple, NaN kept) and from a mapping; None on
    an epoch without validation and on a mapping that leaves them out."""
    (run_id,) = q.enqueue(db, [spec()]).ids
    q.claim_next(db, worker.id)
    bins = (0.9, 0.5, 0.25, math.nan, math.inf)
    timing = dict(epoch_s=1.0, valid_s=0.1, sample_s=0.0, train_s=1.0)
    records.add_epoch_metrics(db, run_id, [
        EpochRecord(epoch=0, step=2, train_loss=1.0, valid_loss=None, fixed_valid_loss=None,
                    **timing),
        EpochRecord(epoch=1, step=4, train_loss=0.8, valid_loss=0.7, fixed_valid_loss=0.6,
                    fixed_valid_bins=bins, **timing)])
    records.add_epoch_metrics(db, run_id, [
        dict(epoch=2, step=6, train_loss=0.6, valid_loss=0.5, fixed_valid_loss=0.4,
             fixed_valid_bins=[0.3, 0.2], **timing),
        dict(epoch=3, step=8, train_loss=0.5, valid_loss=0.4, fixed_valid_loss=0.3, **timing)])
    first, second, third, fourth = records.metrics_since(db, run_id).epochs
    assert first.fixed_valid_bins is None and fourth.fixed_valid_bins is None
    assert second.fixed_valid_bins[:3] == (0.9, 0.5, 0.25)
    assert math.isnan(second.fixed_valid_bins[3]) and second.fixed_valid_bins[4] == math.inf
    assert third.fixed_valid_bins == (0.3, 0.2)


def test_metrics_since_is_incremental_and_truncate_drops_the_tail(db, worker):
    (run_id,) = q.enqueue(db, [spec()]).ids
    q.claim_next(db, worker.id)
    records.add_step_metrics(db, run_id, [_step(i) for i in (1, 2, 3)])
    batch = records.metrics_since(db, run_id)
    assert [s.step for s in batch.steps] == [1, 2, 3]
    assert records.metrics_since(db, run_id, batch.cursor).steps == ()
    records.add_step_metrics(db, run_id, [_step(4), _step(5)])
    later = records.metrics_since(db, run_id, batch.cursor)
    assert [s.step for s in later.steps] == [4, 5]
    records.truncate_metrics(db, run_id, after_step=3)  # resumed from the step-3 checkpoint
    assert [s.step for s in records.metrics_since(db, run_id).steps] == [1, 2, 3]
    assert q.get_run(db, run_id).steps_done == 3


def test_samples_round_trip(db, worker):
    (run_id,) = q.enqueue(db, [spec()]).ids
    vorticity = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
    sample_id = records.add_sample(db, run_id, epoch=1, step=10, array=vorticity)
    batch = records.metrics_since(db, run_id)
    assert batch.sample_ids == (sample_id,) and batch.cursor.sample_id == sample_id
    sample = records.get_sample(db, sample_id)
    assert (sample.shape, sample.dtype, sample.epoch) == ((2, 3, 4, 4), "<f4", 1)
    np.testing.assert_array_equal(sample.array(), vorticity)


def test_record_start_list_and_workers(db, worker):
    q.enqueue(db, [spec(0, tags=("sweep1",)), spec(1, optimizer="muon"),
                   spec(2, config={"lr": 1e-3, "options": {"betas": [0.9, 0.99]}})])
    run = q.claim_next(db, worker.id, now=T0)
    started = q.record_start(db, run.id, worker.id, provenance={"git": "abc", "dirty": True},
                             checkpoint="/ckpt/1.pt")
    assert started.provenance == {"dirty": True, "git": "abc"}
    assert started.checkpoint == "/ckpt/1.pt"
    assert [r.id for r in q.list_runs(db, status="queued")] == [2, 3]
    assert [r.id for r in q.list_runs(db, status=["queued", "running"], ids=[1, 3])] == [1, 3]
    assert [r.id for r in q.list_runs(db, status="running", ids=[2, 3])] == []
    assert q.get_run(db, 3).config == {"lr": 1e-3, "options": {"betas": [0.9, 0.99]}}
    assert q.count_by_status(db)[Status.QUEUED] == 2
    q.heartbeat(db, worker.id, now=at(30))
    (listed,) = workers.list_workers(db)
    assert listed.alive(at(40), grace_s=30) and not listed.alive(at(61), grace_s=30)
    workers.stop_worker(db, worker.id, now=at(41))
    assert not workers.list_workers(db)[0].alive(at(41), grace_s=30)


# ----------------------------------------------------------------------------- concurrency


def _enqueue_and_claim_all(url: str, name: str, barrier, results) -> None:
    db = open_database(url)
    worker = workers.register_worker(db, host=name, pid=0, device="cpu")
    barrier.wait(timeout=60)  # all four queue the same grid at once, then drain the queue
    queued = q.enqueue(db, [spec(seed) for seed in range(60)]).ids
    claimed = []
    while (run := q.claim_next(db, worker.id, lease_s=60)) is not None:
        claimed.append(run.id)
        records.add_step_metrics(db, run.id, [_step(1)])
        q.finish(db, run.id, worker.id, "done")
    results.put((name, queued, claimed))
    db.dispose()


def test_concurrent_processes_never_queue_or_claim_a_run_twice(url):
    db = open_database(url)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    processes = [context.Process(target=_enqueue_and_claim_all,
                                 args=(url, f"w{i}", barrier, results))
                 for i in range(4)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    queued = [run_id for _, ids, _ in outcomes for run_id in ids]
    assert sorted(queued) == list(range(1, 61))  # the duplicates of the others skipped
    claimed = {name: runs for name, _, runs in outcomes}
    ids = [run_id for runs in claimed.values() for run_id in runs]
    assert sorted(ids) == list(range(1, 61))  # each exactly once
    assert sum(1 for runs in claimed.values() if runs) >= 2  # they really competed
    assert q.count_by_status(db)[Status.DONE] == 60
    assert all(r.attempts == 1 for r in q.list_runs(db))
    db.dispose()
