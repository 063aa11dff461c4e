"""The worker loop: claim queued runs from the job database and train them, one at a time.

The loop (storage/queue.py has the calls; the engine never sees the database)::

    register_worker
    repeat: requeue_stale → claim_next → (none: wait, or exit after --idle-exit seconds)
            heartbeat thread (every lease/3: extends the lease; notices cancel and a lost lease)
            data set: generated once under <data>.lock if missing (fcntl, so one of several
                      workers generates and the others wait for it)
            Trainer(config, data, <home>/runs/<id>/, resume=attempt > 1) → StorageSink
            finish done | diverged (final), cancelled, failed (+ traceback),
            or release (SIGTERM/SIGINT: checkpointed, back in the queue)
    stop_worker

SIGTERM/SIGINT ask the trainer to stop after its current step; it checkpoints, the run goes
back to the queue and the worker exits (0 after SIGTERM, 130 after SIGINT). A second signal
stops at once: the run goes back to the queue and resumes from its last checkpoint.
A lost lease (the run was requeued or removed meanwhile) stops the run without writing
anything more: another worker owns it now (every write is fenced by this worker's id, so a
paused worker that wakes up after losing its run gets `LeaseLost` and stops that run).
`requeue_stale` fails a run that lost its worker ``max_attempts`` times (``--max-attempts``,
default 3; a release after a signal is no loss).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from typing import Any

from diffbench.storage import queue, workers
from diffbench.storage.workspace import Workspace

from ..errors import EXIT_INTERRUPTED
from .provision import ensure_dataset
from .sensors import Sensors, load


def log(message: str) -> None:
    """One timestamped line on stderr (the worker's log)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- heartbeat


class Heartbeat(threading.Thread):
    """Extends a run's lease every ``lease_s / 3`` (optuna's heartbeat thread: `Event.wait`,
    so it stops promptly; stamped by the database clock). Sets ``cancelled`` and calls
    ``on_cancel`` when a cancel is requested, sets ``lost`` when the run is no longer ours.
    Each beat carries the worker's load (``sensors``: read here, off the training loop)."""

    def __init__(self, db: Any, worker_id: int, run_id: int, lease_s: float,
                 on_cancel: Any, sensors: Sensors | None = None) -> None:
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.db, self.worker_id, self.run_id, self.lease_s = db, worker_id, run_id, lease_s
        self.on_cancel, self.sensors = on_cancel, sensors
        self.stopped = threading.Event()
        self.lost = False
        self.cancelled = False

    def run(self) -> None:
        from diffbench.storage.db import StorageError

        while not self.stopped.wait(self.lease_s / 3):
            try:
                lease = queue.heartbeat(self.db, self.worker_id, self.run_id,
                                        lease_s=self.lease_s, load=load(self.sensors))
            except StorageError as error:  # a busy or unreachable database: try again
                log(f"heartbeat of run {self.run_id} failed: {error}")
                continue
            if lease.lost:
                self.lost = True
                return
            if lease.cancel_requested and not self.cancelled:
                self.cancelled = True
                self.on_cancel()

    def stop(self) -> None:
        self.stopped.set()
        if self.is_alive():
            self.join()


# ----------------------------------------------------------------------------- the worker


class Worker:
    """One worker process: ``serve`` until the queue stays empty, the run budget is spent or
    a signal arrives; the exit code."""

    #: The signals that stop it (checkpoint, release the run); a Slurm worker adds SIGUSR2.
    SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, db: Any, workspace: Workspace, *, device: str = "auto",
                 lease_s: float = 60.0, poll_s: float = 1.0, max_attempts: int | None = 3,
                 runs: Iterable[int] | None = None) -> None:
        self.db, self.workspace, self.device = db, workspace, device
        self.lease_s, self.poll_s = lease_s, poll_s
        self.max_attempts = max_attempts  # a run that lost this many workers fails
        self.runs = None if runs is None else tuple(runs)  # only these (diffbench demo)
        self.signal: int | None = None
        self.stop = threading.Event()  # set by the first signal; data generation polls it
        self.wake = threading.Event()
        self.trainer: Any = None
        self.id: int | None = None
        self.sensors: Sensors | None = None  # the load each heartbeat carries

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self.signal = signum
        self.stop.set()
        self.wake.set()
        log(f"worker {self.id}: {signal.Signals(signum).name}; stopping after this step")
        if self.trainer is not None:
            if self.trainer.warming_up:  # compiling before its first step: nothing to save
                raise KeyboardInterrupt
            self.trainer.request_stop()

    # ------------------------------------------------------------------ loop

    def serve(self, *, max_runs: int | None = None, idle_exit: float | None = None) -> int:
        from diffbench.engine.device import resolve_device

        previous = {s: signal.signal(s, self._on_signal) for s in self.SIGNALS}
        try:
            me = workers.register_worker(self.db, host=socket.gethostname(), pid=os.getpid(),
                                         device=str(resolve_device(self.device)),
                                         slurm_job=slurm_job(), one_host=True)
            self.id, self.sensors = me.id, Sensors(me.device, log)
            log(f"worker {me.id} ({me.host}, pid {me.pid}, {me.device}) on {self.db.url}")
            done, idle_since, beat = 0, time.monotonic(), 0.0
            while self.signal is None and (max_runs is None or done < max_runs):
                queue.requeue_stale(self.db, max_attempts=self.max_attempts)
                run = queue.claim_next(self.db, me.id, lease_s=self.lease_s, ids=self.runs)
                if run is None:
                    now = time.monotonic()
                    if idle_exit is not None and now - idle_since >= idle_exit:
                        log(f"worker {me.id}: queue empty for {idle_exit:g} s; exiting")
                        break
                    if now - beat >= self.lease_s / 3:
                        queue.heartbeat(self.db, me.id, load=load(self.sensors))
                        beat = now
                    self.wake.wait(self.poll_s if idle_exit is None
                                   else min(self.poll_s, max(idle_exit / 4, 0.05)))
                    continue
                self.train(run)
                done += 1
                idle_since = time.monotonic()
        except KeyboardInterrupt:
            pass
        finally:
            if self.id is not None:
                workers.stop_worker(self.db, self.id)
            if self.sensors is not None:
                self.sensors.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        return EXIT_INTERRUPTED if self.signal == signal.SIGINT else 0

    # ------------------------------------------------------------------ one run

    def train(self, run: Any) -> str:
        """Train one claimed run to an outcome: its final status, "released" or "lost"."""
        from diffbench.engine.metrics import StartRecord, StatusRecord

        from .sink import StorageSink

        log(f"worker {self.id}: run {run.id} (attempt {run.attempts}): {run.preset} "
             f"{run.optimizer} {run.schedule} lr {run.lr:g} wd {run.weight_decay:g} "
             f"seed {run.seed}")
        beat = Heartbeat(self.db, self.id, run.id, self.lease_s, self._on_cancel, self.sensors)
        beat.start()
        sink = StorageSink(self.db, run.id, worker_id=self.id, active=lambda: not beat.lost)
        status, interrupted = None, False
        try:
            config = run_config(run, self.device)
            data = self._data(config)
            folder = self.workspace.root / "runs" / str(run.id)
            resume = run.attempts > 1
            if not resume and folder.exists():  # a stale folder of a removed run's id
                import shutil

                shutil.rmtree(folder)
            if self.signal is not None:
                raise KeyboardInterrupt
            from diffbench.engine.training import Trainer

            self.trainer = Trainer(config, data, folder, resume=resume)
            if self.signal is not None and self.trainer.warming_up:
                raise KeyboardInterrupt  # signalled while it was built: nothing to save yet
            if self.signal is not None or beat.cancelled:
                self.trainer.request_stop()
            for record in self.trainer:
                if beat.lost:
                    break
                if isinstance(record, StartRecord):
                    provenance = dict(record.provenance, host=socket.gethostname(),
                                      pid=os.getpid(), worker_id=self.id)
                    queue.record_start(self.db, run.id, self.id, provenance=provenance,
                                       config=record.config, checkpoint=str(folder))
                    if record.step:
                        log(f"worker {self.id}: run {run.id} resumed at step {record.step}")
                sink.write(record)
                if isinstance(record, StatusRecord):
                    status = record
        except KeyboardInterrupt:
            interrupted = True
        except queue.LeaseLost:  # a write refused: the run is another worker's now
            beat.lost = True
        except Exception as error:  # any failure of a run is its result
            beat.stop()
            return self._fail(run, error, traceback.format_exc(), sink)
        finally:
            self.trainer = None
            beat.stop()
        return self._conclude(run, status, interrupted, beat, sink)

    def _on_cancel(self) -> None:
        log(f"worker {self.id}: cancel requested; stopping after this step")
        if self.trainer is not None:
            self.trainer.request_stop()

    def _conclude(self, run: Any, status: Any, interrupted: bool, beat: Heartbeat,
                  sink: Any) -> str:
        from diffbench.storage.db import StorageError

        if beat.lost:
            log(f"worker {self.id}: run {run.id}: lease lost; left to its new owner")
            return "lost"
        try:
            if status is not None and status.state in ("done", "diverged"):
                queue.finish(self.db, run.id, self.id, status.state, summary=sink.summary(),
                             steps_done=status.step,
                             error=status.message if status.state == "diverged" else None)
                outcome = status.state
            elif beat.cancelled:
                queue.finish(self.db, run.id, self.id, "cancelled", summary=sink.summary(),
                             steps_done=sink.step)
                outcome = "cancelled"
            else:  # stopped by a signal (checkpointed, or a second signal: the last one)
                name = signal.Signals(self.signal).name if self.signal else "interrupted"
                queue.release(self.db, run.id, self.id, reason=f"worker {self.id} stopped "
                              f"({name}) at step {sink.step}")
                outcome = "released"
        except StorageError as error:  # e.g. the lease expired while we finished
            log(f"worker {self.id}: run {run.id}: could not record the outcome: {error}")
            return "lost"
        log(f"worker {self.id}: run {run.id}: {outcome} at step {sink.step}")
        return outcome

    def _fail(self, run: Any, error: Exception, trace: str, sink: Any) -> str:
        from diffbench.storage.db import StorageError

        message = f"{type(error).__name__}: {error}"
        log(f"worker {self.id}: run {run.id} failed: {message}")
        try:
            sink.flush()
            queue.finish(self.db, run.id, self.id, "failed", error=message, traceback=trace,
                         summary=sink.summary(), steps_done=sink.step)
        except StorageError as storage_error:
            log(f"worker {self.id}: run {run.id}: could not record the failure: "
                 f"{storage_error}")
            return "lost"
        return "failed"

    # ------------------------------------------------------------------ data

    def _data(self, config: Any) -> Any:
        """The run's data set, generated first (once, under a file lock) when missing."""
        from diffbench.engine.config import dataset_name
        from diffbench.engine.dataset import GenerationStopped
        from diffbench.engine.run import TrainingData

        path = self.workspace.dataset_path(dataset_name(config.preset))
        if not path.exists():
            try:
                ensure_dataset(config.preset, path, self.device, stop=self.stop.is_set)
            except GenerationStopped as stopped:  # a signal: the run goes back to the queue
                log(f"worker {self.id}: {stopped}")
                raise KeyboardInterrupt from None
        return TrainingData.load(path, config.preset)


def slurm_job() -> str | None:
    """This process's Slurm job: ``<array job>_<task>`` in a job array, else the job id; None
    outside Slurm (what `diffbench workers ls` shows)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID") or None


def run_config(run: Any, device: str) -> Any:
    """The `RunConfig` of a queued run: the resolved config stored when it was queued (the
    device this worker's), so a preset file edited since changes nothing; runs queued
    before configs were stored: their preset with ``--epochs`` and ``--set`` applied."""
    from diffbench.engine.config import load_preset, override
    from diffbench.engine.run_config import RunConfig, split_settings

    if run.config:
        return RunConfig.from_dict({**run.config, "device": device})
    extra, changes = split_settings(run.overrides)
    if run.epochs is not None:
        changes["train.epochs"] = run.epochs
    preset = load_preset(run.preset)
    if changes:
        preset = override(preset, changes)
    return RunConfig(preset=preset, optimizer=run.optimizer, lr=run.lr,
                     weight_decay=run.weight_decay, schedule=run.schedule, seed=run.seed,
                     device=device, **extra)
