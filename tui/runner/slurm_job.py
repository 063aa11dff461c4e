"""What runs inside each task of a `diffbench slurm submit` job array: one worker, in the
task's own Python process (submitit unpickles `WorkerJob` and calls it).

The worker runs in-process, not as a child `diffbench worker`, so the preemption and
time-out signal reaches it directly: Slurm signals every process of the job step, and a
child would need its own handler while the parent waited. The signal path::

    USR2 (sbatch --signal=USR2@<signal-delay> before the time limit, or
          scancel --signal=USR2 <job>_<task> / a preemption that sends it)
      → SlurmWorker._on_signal: the trainer stops after its current step, checkpoints,
        the run goes back to the queue (queue.release), serve() returns
      → submitit's own USR2 handler, called now: WorkerJob.checkpoint (this job again),
        `scontrol requeue <job>_<task>`, exit; Slurm starts the task again later and its
        new worker claims from the queue like any other (the released run resumes from
        its checkpoint wherever it is claimed next).
    TERM (scancel, a preemption without USR2, a node going down): the same release; the
        task ends without requeueing itself (a preemption in REQUEUE mode requeues it).

Importing this module does not import torch; the engine loads when the worker trains.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from submitit.helpers import Checkpointable

from .worker import Worker, log


@dataclass(frozen=True)
class WorkerSettings:
    """The `diffbench worker` options each task's worker runs with."""

    device: str = "auto"
    threads: int | None = None  # None: $SLURM_CPUS_PER_TASK when set, else torch's default
    idle_exit: float | None = None
    max_runs: int | None = None
    lease_s: float = 60.0
    max_attempts: int = 3  # a run that lost this many workers fails (a release is no loss)


class SlurmWorker(Worker):
    """A worker that also stops (checkpoint, release) on Slurm's warning signal."""

    SIGNALS = (*Worker.SIGNALS, signal.SIGUSR2)


class WorkerJob(Checkpointable):
    """One array task's worker on the shared database and workspace; a `Checkpointable`,
    so submitit requeues the task after USR2 instead of letting it end. Its state is its
    arguments: the run it was training is in the database and its checkpoint in
    ``<home>/runs/<id>/``, so `checkpoint` resubmits the job as it was."""

    def __init__(self, home: str, db_url: str, settings: WorkerSettings) -> None:
        self.home, self.db_url, self.settings = home, db_url, settings

    def __call__(self, task: int) -> int:
        # what `diffbench`'s main() and root callback set before any command imports torch
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR",
                              str(Path(self.home) / "cache" / "inductor"))
        from diffbench.storage.db import open_database
        from diffbench.storage.hosts import SharedSQLite, network_warning
        from diffbench.storage.workspace import Workspace

        requeue = signal.getsignal(signal.SIGUSR2)  # submitit's: checkpoint, requeue, exit
        settings = self.settings
        db = open_database(self.db_url, home=self.home)
        if warning := network_warning(self.db_url):
            log(f"warning: {warning}")
        threads = settings.threads or int(os.environ.get("SLURM_CPUS_PER_TASK") or 0)
        if threads:
            import torch

            torch.set_num_threads(threads)
        log(f"slurm task {task}: worker on {db.url}, home {self.home}")
        worker = SlurmWorker(db, Workspace.resolve(Path(self.home)), device=settings.device,
                             lease_s=settings.lease_s, max_attempts=settings.max_attempts)
        try:
            code = worker.serve(max_runs=settings.max_runs, idle_exit=settings.idle_exit)
        except SharedSQLite as refused:  # another host's worker uses this SQLite file
            log(f"slurm task {task}: error: {refused}")
            return 2
        finally:
            db.dispose()
        if worker.signal == signal.SIGUSR2 and callable(requeue):
            log(f"slurm task {task}: run released; asking Slurm to requeue this task")
            sys.stderr.flush()
            requeue(signal.SIGUSR2, None)  # exits (SystemExit) once the task is requeued
        return code
