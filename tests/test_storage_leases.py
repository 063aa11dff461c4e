"""Leases as fences, on a real SQLite file and a real PostgreSQL database (tests/postgres_db.py;
skipped without a server): a worker that lost its run (a paused "zombie" whose lease
expired) writes nothing for it, and a run that keeps losing its worker fails, while a clean
release is no loss. Explicit times, no sleeps, except in the race between a zombie and the
run's new owner, which runs two real threads."""

from __future__ import annotations

import datetime as dt
import math
import threading

import numpy as np
import pytest
import sqlalchemy as sa

from diffbench.storage import queue as q
from diffbench.storage import records, workers
from diffbench.storage.db import StorageError, open_database
from diffbench.storage.queue import LeaseLost
from diffbench.storage.states import IllegalTransition, Status

T0 = dt.datetime(2030, 1, 1, 12, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def spec(seed: int = 0) -> q.RunSpec:
    return q.RunSpec(preset="tiny", optimizer="adamw", schedule="linear", lr=1e-3,
                     weight_decay=0.01, seed=seed)


def step(n: int, loss: float = 0.5) -> dict:
    return dict(step=n, epoch=0, loss=loss, lr=1e-3, grad_norm=1.0, data_ms=0.1,
                compute_ms=2.0, optimizer_ms=0.5)


EPOCH = dict(epoch=0, step=2, train_loss=0.5, valid_loss=0.4, fixed_valid_loss=0.3,
             epoch_s=1.0, valid_s=0.1, sample_s=0.0, train_s=1.0)


def register(db, host: str):
    return workers.register_worker(db, host=host, pid=1, device="cpu", now=T0).id


def counts(db, run_id: int) -> tuple[int, int, int]:
    batch = records.metrics_since(db, run_id)
    return len(batch.steps), len(batch.epochs), len(batch.sample_ids)


# ----------------------------------------------------------------------------- fences


def test_a_zombie_writes_nothing_for_the_run_its_lease_lost(db):
    zombie, owner = register(db, "a"), register(db, "b")
    (run_id,) = q.enqueue(db, [spec()]).ids
    q.claim_next(db, zombie, lease_s=10, now=at(0))
    q.record_start(db, run_id, zombie, provenance={"device": "cpu"}, checkpoint="/a")
    records.add_step_metrics(db, run_id, [step(1), step(2)], worker_id=zombie)
    records.add_epoch_metrics(db, run_id, [EPOCH], worker_id=zombie)
    records.add_sample(db, run_id, epoch=0, step=2, array=np.zeros((2, 2), np.float32),
                       worker_id=zombie)
    assert q.requeue_stale(db, now=at(11)) == (run_id,)  # paused past its lease

    writes = {  # everything a worker writes for a run
        "steps": lambda: records.add_step_metrics(db, run_id, [step(3)], worker_id=zombie),
        "epochs": lambda: records.add_epoch_metrics(db, run_id, [EPOCH], worker_id=zombie),
        "sample": lambda: records.add_sample(db, run_id, epoch=0, step=3, worker_id=zombie,
                                             array=np.ones((2, 2), np.float32)),
        "truncate": lambda: records.truncate_metrics(db, run_id, 0, worker_id=zombie),
        "start": lambda: q.record_start(db, run_id, zombie, provenance={"x": 1}),
        "finish": lambda: q.finish(db, run_id, zombie, "done", summary={"x": 1}),
        "release": lambda: q.release(db, run_id, zombie, reason="SIGTERM"),
    }
    before = (q.get_run(db, run_id), counts(db, run_id))
    for write in writes.values():  # requeued, not yet claimed again
        with pytest.raises(LeaseLost, match=rf"run {run_id} is not leased to worker "
                                            rf"{zombie} any more \(it is queued\)"):
            write()
    assert (q.get_run(db, run_id), counts(db, run_id)) == before

    q.claim_next(db, owner, lease_s=60, now=at(12))
    records.truncate_metrics(db, run_id, 0, worker_id=owner)  # resumed from scratch
    records.add_step_metrics(db, run_id, [step(1, 0.25)], worker_id=owner)
    before = (q.get_run(db, run_id), counts(db, run_id))
    for name, write in writes.items():  # claimed by another worker
        with pytest.raises(LeaseLost, match=rf"\(worker {owner} holds it\)") as error:
            write()
        assert (error.value.run_id, error.value.worker_id) == (run_id, zombie), name
    assert (q.get_run(db, run_id), counts(db, run_id)) == before == (before[0], (1, 0, 0))
    assert q.heartbeat(db, zombie, run_id, now=at(13)).lost  # the heartbeat answers, no raise

    done = q.finish(db, run_id, owner, "done", summary={"final": 0.25}, steps_done=1)
    assert (done.status, done.worker_id, done.steps_done) == (Status.DONE, owner, 1)
    with pytest.raises(LeaseLost, match=r"\(it is done\)"):
        records.add_step_metrics(db, run_id, [step(2)], worker_id=owner)  # its own, finished
    assert [s.loss for s in records.metrics_since(db, run_id).steps] == [0.25]


def test_lease_lost_is_an_illegal_transition_and_names_a_removed_run(db):
    worker = register(db, "a")
    (run_id,) = q.enqueue(db, [spec()]).ids
    q.claim_next(db, worker, lease_s=10, now=at(0))
    q.requeue_stale(db, now=at(11))
    q.remove(db, [run_id])
    with pytest.raises(LeaseLost, match=r"\(it was removed\)") as error:
        records.add_step_metrics(db, run_id, [step(1)], worker_id=worker)
    assert isinstance(error.value, IllegalTransition) and isinstance(error.value, StorageError)


def test_no_worker_id_writes_unfenced(db):
    """``worker_id=None``: tools and tests fill any run, running or not, as before."""
    (run_id,) = q.enqueue(db, [spec()]).ids
    records.add_step_metrics(db, run_id, [step(1)])
    records.add_epoch_metrics(db, run_id, [EPOCH])
    records.add_sample(db, run_id, epoch=0, step=1, array=np.zeros(3, np.float32))
    assert counts(db, run_id) == (1, 1, 1) and q.get_run(db, run_id).steps_done == 1
    with pytest.raises(IllegalTransition, match="queued, not running"):
        q.finish(db, run_id, None, "done")  # finish still wants a running run


# ----------------------------------------------------------------------------- lost workers


def test_a_run_that_loses_its_worker_three_times_fails_and_a_release_is_no_loss(db):
    lost, clean = register(db, "gpu-node-7"), register(db, "b")
    (run_id,) = q.enqueue(db, [spec()]).ids
    plan = ["release", "lost", "release", "lost", "lost"]  # preempted twice, lost 3 times
    for attempt, what in enumerate(plan, start=1):
        t = 100.0 * attempt
        worker = clean if what == "release" else lost
        assert q.claim_next(db, worker, lease_s=10, now=at(t)).id == run_id
        q.record_start(db, run_id, worker, provenance={"device": "cpu"})
        losses = plan[:attempt].count("lost")
        if what == "release":  # SIGTERM: checkpointed and handed back
            q.release(db, run_id, clean, reason="SIGTERM")
            assert q.get_run(db, run_id).provenance.get("workers_lost", 0) == losses
            continue
        moved = q.requeue_stale(db, now=at(t + 11), max_attempts=3)
        run = q.get_run(db, run_id)
        assert moved == (run_id,) and run.attempts == attempt
        assert run.provenance == {"device": "cpu", "workers_lost": losses}
        if losses < 3:
            assert run.status == Status.QUEUED, run
            assert run.error == (f"lost its worker (worker {lost} on host gpu-node-7, lease "
                                 f"expired at {at(t + 10):%Y-%m-%d %H:%M:%S} UTC); lost "
                                 f"{losses} of 3 allowed")
    assert (run.status, run.attempts, run.provenance["workers_lost"]) == (Status.FAILED, 5, 3)
    assert run.error == (f"lost its worker 3 times (last: worker {lost} on host gpu-node-7, "
                         "lease expired at 2030-01-01 12:08:30 UTC); raise --max-attempts or "
                         "check its memory use")
    assert run.finished_at == at(t + 11) and run.lease_expires_at is None

    assert q.retry(db, [run_id]) == (run_id,)  # a retried run starts counting again
    assert q.get_run(db, run_id).provenance == {"device": "cpu"}
    q.claim_next(db, lost, lease_s=10, now=at(1000))
    assert q.requeue_stale(db, now=at(1011), max_attempts=2) == (run_id,)
    assert q.get_run(db, run_id).status == Status.QUEUED


def test_without_max_attempts_runs_are_requeued_forever_and_the_bound_is_checked(db):
    worker = register(db, "a")
    (run_id,) = q.enqueue(db, [spec()]).ids
    for attempt in range(4):
        q.claim_next(db, worker, lease_s=10, now=at(100 * attempt))
        q.requeue_stale(db, now=at(100 * attempt + 11))
    run = q.get_run(db, run_id)
    assert (run.status, run.provenance) == (Status.QUEUED, {"workers_lost": 4})
    assert run.error.endswith("; lost 4 of unlimited allowed")
    with pytest.raises(StorageError, match="max_attempts must be ≥ 1, not 0"):
        q.requeue_stale(db, max_attempts=0)


# ----------------------------------------------------------------------------- the race


def write_until_lost(db, run_id: int, worker: int, outcome: dict, started) -> None:
    """Steps (loss 1.0) as fast as they go until `LeaseLost`; ``outcome["zombie"]``: how
    many were written, or the unexpected error."""
    n = 0
    try:
        while True:
            n += 1
            records.add_step_metrics(db, run_id, [step(n, 1.0)], worker_id=worker)
            started.set()
    except LeaseLost:
        outcome["zombie"] = n - 1
    except BaseException as error:
        outcome["zombie"] = error
    finally:
        started.set()


def test_a_zombie_racing_the_runs_new_owner_never_writes_after_the_takeover(db):
    """The zombie writes steps as fast as it can while another thread requeues its run (the
    lease long expired) and claims it: every zombie write either commits before the takeover
    or raises `LeaseLost`, none lands after the new owner counted them, and nothing
    deadlocks (PostgreSQL: the fence locks the run row, `requeue_stale` skips it)."""
    zombie, owner = register(db, "a"), register(db, "b")
    far = workers.database_now(db) + dt.timedelta(days=1)
    for round_ in range(12):
        (run_id,) = q.enqueue(db, [spec(round_)]).ids
        assert q.claim_next(db, zombie, lease_s=3600, ids=[run_id]).id == run_id
        outcome: dict[str, object] = {}
        started = threading.Event()
        thread = threading.Thread(target=write_until_lost,
                                  args=(db, run_id, zombie, outcome, started))
        thread.start()
        started.wait(30)
        while q.requeue_stale(db, now=far) != (run_id,):  # skipped while a write holds it
            pass
        # PostgreSQL: a zombie's refused fence may hold the row for an instant (a locking
        # read that waited for the requeue locks the new version before it rechecks): the
        # claim skips it then, and the next try takes it
        while (run := q.claim_next(db, owner, lease_s=3600, ids=[run_id])) is None:
            pass
        assert run.id == run_id
        seen = sum(s.loss == 1.0 for s in records.metrics_since(db, run_id).steps)
        records.add_step_metrics(db, run_id, [step(seen + 1, 2.0)], worker_id=owner)
        thread.join(30)
        assert not thread.is_alive()
        assert outcome["zombie"] == seen, outcome  # each write committed or refused
        losses = [s.loss for s in records.metrics_since(db, run_id).steps]
        assert losses == [1.0] * seen + [2.0], round_  # nothing after the takeover
        q.finish(db, run_id, owner, "done")


def test_a_fenced_write_holds_the_run_row_against_requeue(url):
    """PostgreSQL: while a worker's write transaction holds its run (the fence's lock),
    `requeue_stale` passes the row by instead of requeuing it under the write."""
    if not url.startswith("postgres"):
        pytest.skip("SQLite serializes writers on the whole database (BEGIN IMMEDIATE)")
    waiting = sa.make_url(url).update_query_dict({"options": "-c lock_timeout=2000"})
    db = open_database(waiting.render_as_string(hide_password=False))
    writer = open_database(url)
    try:
        worker = register(db, "a")
        (run_id,) = q.enqueue(db, [spec()]).ids
        q.claim_next(db, worker, lease_s=1)
        far = workers.database_now(db) + dt.timedelta(days=1)
        with writer.session(write=True) as session:
            q.hold_lease(session, run_id, worker)  # a metric write, mid-transaction
            assert q.requeue_stale(db, now=far) == ()
            assert q.heartbeat(db, worker).lost is False  # the worker row is not held
        assert q.requeue_stale(db, now=far) == (run_id,)
    finally:
        writer.dispose()
        db.dispose()


def test_non_finite_steps_still_round_trip_through_the_fence(db):
    worker = register(db, "a")
    (run_id,) = q.enqueue(db, [spec()]).ids
    q.claim_next(db, worker)
    records.add_step_metrics(db, run_id, [step(1, math.nan), step(2, math.inf)],
                             worker_id=worker)
    first, second = records.metrics_since(db, run_id).steps
    assert math.isnan(first.loss) and second.loss == math.inf
    assert q.get_run(db, run_id).steps_done == 2
