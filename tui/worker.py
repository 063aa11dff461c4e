"""`diffbench worker`: claim queued runs from the job database and train them, one at a time.

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
anything more: another worker owns it now.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer

from diffbench.storage.workspace import Workspace

from .errors import EXIT_INTERRUPTED, user_errors

DB_META_KEY = "diffbench.db_url"  # where the root callback puts the global --db


def worker(
    ctx: typer.Context,
    device: Annotated[str, typer.Option(
        "--device", "-d", envvar="DIFFBENCH_DEVICE",
        help="auto (CUDA when present), cpu, cuda or cuda:N.")] = "auto",
    gpus: Annotated[str | None, typer.Option(
        "--gpus", metavar="0,1|all", help="One worker process per listed GPU, each seeing only "
        "its GPU (CUDA_VISIBLE_DEVICES); 'all': every visible GPU. Repeat an index for "
        "several workers on one GPU: 0,0,0,0 is four on GPU 0.", show_default=False)] = None,
    per_gpu: Annotated[str | None, typer.Option(
        "--per-gpu", metavar="N", help="Workers on each GPU of --gpus (without --gpus: on "
        "every visible GPU). Workers on one GPU share it through CUDA MPS, which diffbench "
        "starts and stops when nvidia-cuda-mps-control is installed; else by time-slicing. "
        "Default: 1.", show_default=False)] = None,
    max_runs: Annotated[int | None, typer.Option(
        "--max-runs", metavar="N", help="Exit after N runs.", show_default=False)] = None,
    idle_exit: Annotated[float | None, typer.Option(
        "--idle-exit", metavar="SECONDS", help="Exit when the queue has been empty this long.",
        show_default=False)] = None,
    lease: Annotated[float, typer.Option(
        "--lease", metavar="SECONDS", help="Lease of a claimed run; heartbeats every third "
        "of it. A run whose worker is silent this long goes back to the queue.")] = 60.0,
    db_url: Annotated[str | None, typer.Option(
        "--db", metavar="URL", help="Job database (SQLAlchemy URL); also the global --db. "
        "Default: $DIFFBENCH_DB, else <home>/diffbench.db.", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        "--threads", metavar="N", help="CPU threads per torch operation. Default: torch's "
        "(one per core). Several CPU workers on one machine want cores / workers each: "
        "threads beyond the free cores spin at every operation's barrier.",
        show_default=False)] = None,
    only: Annotated[list[int] | None, typer.Option(
        "--run", metavar="ID", help="Claim only this run (repeat for several); with "
        "--idle-exit 0 the worker ends once they are all trained.", show_default=False)] = None,
) -> None:
    """Claim queued runs and train them until stopped.

    Each run trains in <home>/runs/<id>/ (checkpoints there); metrics go to the database.
    SIGTERM or Ctrl-C checkpoints the current run, puts it back in the queue and exits.

    [bold]Examples[/]

      diffbench worker --device cuda:0
      diffbench worker --gpus all
      diffbench worker --gpus 0 --per-gpu 4   # four runs share GPU 0 (CUDA MPS when available)
      diffbench worker --max-runs 1 --idle-exit 60
      diffbench worker --device cpu --threads 1      # one of several CPU workers
      diffbench worker --run 7 --run 8 --idle-exit 0 # just these runs, then exit
    """
    from .errors import require

    workspace: Workspace = ctx.obj
    db_url = db_url or _global_db(ctx)
    with user_errors():
        require(max_runs is None or max_runs > 0, f"--max-runs must be positive, got {max_runs}")
        require(idle_exit is None or idle_exit >= 0,
                f"--idle-exit must be non-negative, got {idle_exit}")
        require(lease > 0, f"--lease must be positive, got {lease}")
        require(threads is None or threads > 0, f"--threads must be positive, got {threads}")
        require(per_gpu is None or (per_gpu.strip().isdecimal() and int(per_gpu) > 0),
                f"--per-gpu takes a positive integer, got {per_gpu!r}")
        require(not only or (gpus is None and per_gpu is None),
                "--run trains runs in this process: it does not combine with --gpus/--per-gpu")
    if gpus is not None or per_gpu is not None:
        with user_errors():
            ids = expand_gpus(gpus or "all", per_gpu=int(per_gpu or 1),
                              visible=os.environ.get("CUDA_VISIBLE_DEVICES"))
        raise typer.Exit(_spawn_per_gpu(ids, workspace, db_url, max_runs, idle_exit, lease,
                                        threads))

    from diffbench.engine.device import DeviceError, resolve_device
    from diffbench.storage.db import StorageError, open_database

    with user_errors(DeviceError, StorageError):
        resolve_device(device)
        db = open_database(db_url, home=workspace.root)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    code = Worker(db, workspace, device=device, lease_s=lease, runs=only or None).serve(
        max_runs=max_runs, idle_exit=idle_exit)
    db.dispose()
    raise typer.Exit(code)


def _global_db(ctx: typer.Context) -> str | None:
    """The root command's ``--db`` (the root callback keeps it in ``ctx.meta``), if any;
    None lets `open_database` fall back to ``$DIFFBENCH_DB``, then the workspace file."""
    return ctx.find_root().meta.get(DB_META_KEY) or ctx.find_root().params.get("db_url")


def _log(message: str) -> None:
    typer.echo(f"{time.strftime('%H:%M:%S')} {message}", err=True)


# ----------------------------------------------------------------------------- heartbeat


class Heartbeat(threading.Thread):
    """Extends a run's lease every ``lease_s / 3`` (optuna's heartbeat thread: `Event.wait`,
    so it stops promptly; stamped by the database clock). Sets ``cancelled`` and calls
    ``on_cancel`` when a cancel is requested, sets ``lost`` when the run is no longer ours."""

    def __init__(self, db: Any, worker_id: int, run_id: int, lease_s: float,
                 on_cancel: Any) -> None:
        super().__init__(name=f"heartbeat-run-{run_id}", daemon=True)
        self.db, self.worker_id, self.run_id, self.lease_s = db, worker_id, run_id, lease_s
        self.on_cancel = on_cancel
        self.stopped = threading.Event()
        self.lost = False
        self.cancelled = False

    def run(self) -> None:
        from diffbench.storage import queue
        from diffbench.storage.db import StorageError

        while not self.stopped.wait(self.lease_s / 3):
            try:
                lease = queue.heartbeat(self.db, self.worker_id, self.run_id,
                                        lease_s=self.lease_s)
            except StorageError as error:  # a busy or unreachable database: try again
                _log(f"heartbeat of run {self.run_id} failed: {error}")
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

    def __init__(self, db: Any, workspace: Workspace, *, device: str = "auto",
                 lease_s: float = 60.0, poll_s: float = 1.0,
                 runs: Iterable[int] | None = None) -> None:
        self.db, self.workspace, self.device = db, workspace, device
        self.lease_s, self.poll_s = lease_s, poll_s
        self.runs = None if runs is None else tuple(runs)  # only these (diffbench demo)
        self.signal: int | None = None
        self.wake = threading.Event()
        self.trainer: Any = None
        self.id: int | None = None

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self.signal = signum
        self.wake.set()
        _log(f"worker {self.id}: {signal.Signals(signum).name}; stopping after this step")
        if self.trainer is not None:
            self.trainer.request_stop()

    # ------------------------------------------------------------------ loop

    def serve(self, *, max_runs: int | None = None, idle_exit: float | None = None) -> int:
        from diffbench.engine.device import resolve_device
        from diffbench.storage import queue

        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            me = queue.register_worker(self.db, host=socket.gethostname(), pid=os.getpid(),
                                       device=str(resolve_device(self.device)))
            self.id = me.id
            _log(f"worker {me.id} ({me.host}, pid {me.pid}, {me.device}) on {self.db.url}")
            done, idle_since, beat = 0, time.monotonic(), 0.0
            while self.signal is None and (max_runs is None or done < max_runs):
                queue.requeue_stale(self.db)
                run = queue.claim_next(self.db, me.id, lease_s=self.lease_s, ids=self.runs)
                if run is None:
                    now = time.monotonic()
                    if idle_exit is not None and now - idle_since >= idle_exit:
                        _log(f"worker {me.id}: queue empty for {idle_exit:g} s; exiting")
                        break
                    if now - beat >= self.lease_s / 3:
                        queue.heartbeat(self.db, me.id)
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
                queue.stop_worker(self.db, self.id)
            for s, handler in previous.items():
                signal.signal(s, handler)
        return EXIT_INTERRUPTED if self.signal == signal.SIGINT else 0

    # ------------------------------------------------------------------ one run

    def train(self, run: Any) -> str:
        """Train one claimed run to an outcome: its final status, "released" or "lost"."""
        from diffbench.engine.metrics import StartRecord, StatusRecord
        from diffbench.storage import queue

        from .record_sink import StorageSink

        _log(f"worker {self.id}: run {run.id} (attempt {run.attempts}): {run.preset} "
             f"{run.optimizer} {run.schedule} lr {run.lr:g} wd {run.weight_decay:g} "
             f"seed {run.seed}")
        beat = Heartbeat(self.db, self.id, run.id, self.lease_s, self._on_cancel)
        beat.start()
        sink = StorageSink(self.db, run.id, active=lambda: not beat.lost)
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
                        _log(f"worker {self.id}: run {run.id} resumed at step {record.step}")
                sink.write(record)
                if isinstance(record, StatusRecord):
                    status = record
        except KeyboardInterrupt:
            interrupted = True
        except Exception as error:  # any failure of a run is its result
            beat.stop()
            return self._fail(run, error, traceback.format_exc(), sink)
        finally:
            self.trainer = None
            beat.stop()
        return self._conclude(run, status, interrupted, beat, sink)

    def _on_cancel(self) -> None:
        _log(f"worker {self.id}: cancel requested; stopping after this step")
        if self.trainer is not None:
            self.trainer.request_stop()

    def _conclude(self, run: Any, status: Any, interrupted: bool, beat: Heartbeat,
                  sink: Any) -> str:
        from diffbench.storage import queue
        from diffbench.storage.db import StorageError

        if beat.lost:
            _log(f"worker {self.id}: run {run.id}: lease lost; left to its new owner")
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
            _log(f"worker {self.id}: run {run.id}: could not record the outcome: {error}")
            return "lost"
        _log(f"worker {self.id}: run {run.id}: {outcome} at step {sink.step}")
        return outcome

    def _fail(self, run: Any, error: Exception, trace: str, sink: Any) -> str:
        from diffbench.storage import queue
        from diffbench.storage.db import StorageError

        message = f"{type(error).__name__}: {error}"
        _log(f"worker {self.id}: run {run.id} failed: {message}")
        try:
            sink.flush()
            queue.finish(self.db, run.id, self.id, "failed", error=message, traceback=trace,
                         summary=sink.summary(), steps_done=sink.step)
        except StorageError as storage_error:
            _log(f"worker {self.id}: run {run.id}: could not record the failure: "
                 f"{storage_error}")
            return "lost"
        return "failed"

    # ------------------------------------------------------------------ data

    def _data(self, config: Any) -> Any:
        """The run's data set, generated first (once, under a file lock) when missing."""
        from diffbench.engine.run import TrainingData

        path = self.workspace.dataset_path(dataset_stem(config.preset))
        if not path.exists():
            ensure_dataset(config.preset, path, self.device)
        return TrainingData.load(path, config.preset)


def run_config(run: Any, device: str) -> Any:
    """The `RunConfig` of a queued run: the resolved config stored when it was queued (the
    device this worker's), so a preset file edited since changes nothing; runs queued
    before configs were stored: their preset with ``--epochs`` and ``--set`` applied."""
    from diffbench.engine.config import load_preset, override
    from diffbench.engine.run import RunConfig

    from .train import RUN_KEYS

    if run.config:
        return RunConfig.from_dict({**run.config, "device": device})
    changes = dict(run.overrides)
    extra = {k: changes.pop(k) for k in RUN_KEYS if k in changes}
    if run.epochs is not None:
        changes["train.epochs"] = run.epochs
    preset = load_preset(run.preset)
    if changes:
        preset = override(preset, changes)
    return RunConfig(preset=preset, optimizer=run.optimizer, lr=run.lr,
                     weight_decay=run.weight_decay, schedule=run.schedule, seed=run.seed,
                     device=device, **extra)


def dataset_stem(preset: Any) -> str:
    """``<name>`` (what `diffbench data generate` writes), or ``<name>-<hash>`` when the
    data recipe differs from the shipped preset of that name (a ``--set data.…``)."""
    from diffbench.engine.config import available_presets, load_preset

    name = preset.name
    if name in available_presets() and load_preset(name).data != preset.data:
        digest = hashlib.sha256(json.dumps(preset.to_dict()["data"], sort_keys=True)
                                .encode()).hexdigest()[:8]
        return f"{name}-{digest}"
    return name


def ensure_dataset(preset: Any, path: Path, device: str, progress: Any = None) -> None:
    """Generate ``path`` unless it exists, holding ``<path>.lock`` (fcntl) meanwhile, so of
    several workers one generates and the rest wait and then load it (``progress``: as
    `generate_dataset` takes it)."""
    import fcntl

    from diffbench.engine.dataset import compile_pays_off, generate_dataset
    from diffbench.engine.device import resolve_device

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if path.exists():
                return
            torch_device = resolve_device(device)
            _log(f"data set {path} is missing; generating it "
                 f"({preset.data.trajectories} trajectories)")
            generate_dataset(preset, path, device=torch_device,
                             compile=compile_pays_off(preset.data, torch_device),
                             progress=progress)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------- --gpus


def expand_gpus(gpus: str, *, per_gpu: int = 1, visible: str | None = None,
                device_count: Callable[[], int] | None = None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each worker to start: every GPU of ``gpus`` ('all', or
    indices such as ``0,1`` or ``0,0,0,0``) ``per_gpu`` times, in order. An index counts among
    ``visible`` (the supervisor's CUDA_VISIBLE_DEVICES) when that is set, as CUDA counts;
    'all' without it asks ``device_count`` (default: torch's). Raises `UserError`."""
    from .errors import UserError, require

    if gpus.strip() == "all":
        if visible is not None:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
        else:
            if device_count is None:
                import torch

                device_count = torch.cuda.device_count
            ids = [str(i) for i in range(device_count())]
        require(bool(ids), "--gpus all: no CUDA device is visible")
    else:
        ids = [g.strip() for g in gpus.split(",") if g.strip()]
        if not ids or not all(g.isdecimal() for g in ids):
            raise UserError(f"--gpus takes 'all' or indices like 0,1 or 0,0,0,0, not {gpus!r}")
        ids = [str(int(g)) for g in ids]
        if visible is not None:
            shown = [v.strip() for v in visible.split(",") if v.strip()]
            if any(int(g) >= len(shown) for g in ids):
                raise UserError(f"--gpus {gpus}: CUDA_VISIBLE_DEVICES={visible} shows "
                                f"{len(shown)} device(s)")
            ids = [shown[int(g)] for g in ids]
    return [gpu for gpu in ids for _ in range(per_gpu)]


def describe_workers(ids: list[str], mps: bool) -> str:
    """The supervisor's log line, e.g. ``started 4 workers (GPU 0 ×4, MPS)``."""
    counts = Counter(ids)
    gpus = ", ".join(f"GPU {gpu} ×{n}" if n > 1 else f"GPU {gpu}" for gpu, n in counts.items())
    sharing = "" if max(counts.values()) == 1 else ", MPS" if mps else ", time-slicing"
    return f"started {len(ids)} worker{'s' if len(ids) != 1 else ''} ({gpus}{sharing})"


def _spawn_per_gpu(ids: list[str], workspace: Workspace, db_url: str | None,
                   max_runs: int | None, idle_exit: float | None, lease: float,
                   threads: int | None) -> int:
    """One `diffbench worker --device cuda` child per entry of ``ids``, with
    CUDA_VISIBLE_DEVICES set to it; several on one GPU share it through an MPS daemon that
    lives as long as this supervisor (tui/mps.py). Signals are passed on; the exit code is
    the worst child's."""
    from .mps import mps_daemon

    args = [sys.executable, "-c", "from diffbench.tui.cli import main; main()",
            "--home", str(workspace.root), "worker", "--device", "cuda", "--lease", str(lease)]
    if db_url:
        args += ["--db", db_url]
    if max_runs is not None:
        args += ["--max-runs", str(max_runs)]
    if idle_exit is not None:
        args += ["--idle-exit", str(idle_exit)]
    if threads is not None:
        args += ["--threads", str(threads)]
    children: list[subprocess.Popen] = []
    got: list[int] = []

    def forward(signum: int, frame: object) -> None:
        got.append(signum)
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT):  # before the daemon starts, so it is stopped
        signal.signal(s, forward)
    shared = len(set(ids)) < len(ids)
    with mps_daemon(workspace.root, enabled=shared, log=_log) as mps_env:
        for gpu in ids:
            if got:  # stopped while starting: start no more
                break
            children.append(subprocess.Popen(
                args, env={**os.environ, **mps_env, "CUDA_VISIBLE_DEVICES": gpu}))
        if children:
            _log(describe_workers(ids[:len(children)], mps=bool(mps_env)))
        codes = [child.wait() for child in children]
    if signal.SIGINT in got:
        return EXIT_INTERRUPTED
    return max(codes, key=lambda c: (c != 0, abs(c)), default=0)
