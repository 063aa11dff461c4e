"""What the run screen shows of one run, read from the job database (no Textual here).

`RunDetailsReader.refresh()` reads one run in one short read transaction: its row (primary
key), the newest row id of each metric table for it (three index lookups), and, only when
those moved, the step rows past its cursor (one aggregate), its last steps, its new epoch
rows and the names of its new samples (the ``(run_id, id)`` indexes; no table scan). A
finished run that nothing changes costs one row and three lookups per tick. A resumed run
rewrites its metrics past its checkpoint (`storage.records.truncate_metrics`: its
``steps_done`` goes back) and is read again from scratch.

The database keeps no event table, so `events` derives the run's history from what it does
keep (the run row's times, attempts and error, its workers, its provenance and metrics) and
says what it cannot know. `load_frame` reads one preview's bytes when the screen scrubs to it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from diffbench.storage import reads
from diffbench.storage.db import Database, NotFound
from diffbench.storage.queue import LOST_KEY
from diffbench.storage.records import EpochMetric
from diffbench.storage.runs import Run
from diffbench.storage.states import Status
from diffbench.storage.workers import Worker

from .preview import generated_images

RECENT = 50  # the steps the "recent" step times average over
GRACE_S = 60.0  # a worker silent this long is dead (as in the workers pane)


@dataclass(frozen=True)
class StepSplit:
    """Mean milliseconds per step of each part, over ``steps`` steps (None: no steps)."""

    steps: int
    data_ms: float | None = None
    compute_ms: float | None = None
    optimizer_ms: float | None = None

    @property
    def total_ms(self) -> float | None:
        parts = (self.data_ms, self.compute_ms, self.optimizer_ms)
        return None if None in parts else sum(parts)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Frame:
    """A preview to scrub to: a generated sample (``vorticity`` after an epoch, or
    ``quality``, what the assessment scored, beside ``data_id``, its test data)."""

    sample_id: int
    name: str
    epoch: int
    step: int
    data_id: int | None = None


@dataclass(frozen=True)
class RunDetails:
    run: Run
    workers: Mapping[int, Worker]  # its current worker and the one its provenance names
    mean: StepSplit  # over all its step rows
    recent: StepSplit  # over its last `RECENT` step rows
    last_loss: float | None  # its last step's
    first_step: int | None
    last_step: int | None
    epochs: tuple[EpochMetric, ...]
    frames: tuple[Frame, ...]
    now: dt.datetime


@dataclass
class RunDetailsReader:
    """Cursors and aggregates of one run between refreshes; one refresh at a time."""

    db: Database
    run_id: int
    clock: Callable[[], dt.datetime] | None = None  # None: the database clock
    _key: tuple | None = None
    _sums: reads.StepSums | None = None
    _recent: StepSplit = field(default_factory=lambda: StepSplit(0))
    _last_loss: float | None = None
    _epochs: list[EpochMetric] = field(default_factory=list)
    _samples: list[reads.SampleEntry] = field(default_factory=list)
    _cursors: reads.RunCursors = field(default_factory=lambda: reads.RunCursors(0, 0, 0))
    _run: Run | None = None

    def refresh(self) -> RunDetails | None:
        """The run's details, or None when nothing it shows changed (a run that is not
        running: a running one's heartbeat age moves). `NotFound` once it is removed."""
        with self.db.session() as session:
            run = reads.run(session, self.run_id)
            if run is None:
                raise NotFound(f"no run with id {self.run_id}")
            cursors = reads.run_cursors(session, self.run_id)
            key = (run.status, run.attempts, run.steps_done, run.worker_id, run.finished_at,
                   run.heartbeat_at, run.cancel_requested, run.error, cursors)
            if key == self._key and run.status != Status.RUNNING:
                return None
            old = self._run
            if old is not None and (run.attempts != old.attempts
                                    or run.steps_done < old.steps_done):
                self._reset()  # resumed: its rows past the checkpoint were rewritten
            self._read_metrics(session, cursors)
            ids = {run.worker_id, (run.provenance or {}).get("worker_id")} - {None}
            workers = reads.workers_by_id(session, ids)  # type: ignore[arg-type]
            now = self.clock() if self.clock is not None else reads.database_now(session)
        self._key, self._run = key, run
        sums = self._sums or reads.StepSums(0, 0.0, 0.0, 0.0, None, None, 0)
        n = sums.count
        mean = (StepSplit(n, sums.data_ms / n, sums.compute_ms / n, sums.optimizer_ms / n)
                if n else StepSplit(0))
        return RunDetails(run=run, workers=workers, mean=mean, recent=self._recent,
                          last_loss=self._last_loss,
                          first_step=sums.first_step, last_step=sums.last_step,
                          epochs=tuple(self._epochs), frames=frames(self._samples), now=now)

    def _reset(self) -> None:
        self._sums, self._recent, self._last_loss = None, StepSplit(0), None
        self._epochs, self._samples = [], []
        self._cursors = reads.RunCursors(0, 0, 0)

    def _read_metrics(self, session, cursors: reads.RunCursors) -> None:
        seen = self._cursors
        if cursors.step_id != seen.step_id:
            new = reads.step_sums(session, self.run_id, after_id=seen.step_id)
            old = self._sums
            self._sums = new if old is None else reads.StepSums(
                old.count + new.count, old.data_ms + new.data_ms,
                old.compute_ms + new.compute_ms, old.optimizer_ms + new.optimizer_ms,
                old.first_step if old.first_step is not None else new.first_step,
                new.last_step if new.last_step is not None else old.last_step,
                max(old.last_id, new.last_id))
            last = reads.recent_steps(session, self.run_id, RECENT)
            n = len(last)
            self._last_loss = last[-1].loss if last else None
            self._recent = StepSplit(n, *(sum(getattr(s, k) for s in last) / n for k in
                                          ("data_ms", "compute_ms", "optimizer_ms"))
                                     ) if n else StepSplit(0)
        if cursors.epoch_id != seen.epoch_id:
            self._epochs += reads.run_epochs(session, self.run_id, after_id=seen.epoch_id)
        if cursors.sample_id != seen.sample_id:
            self._samples += reads.run_samples(session, self.run_id, after_id=seen.sample_id)
        self._cursors = cursors


def frames(samples: list[reads.SampleEntry]) -> tuple[Frame, ...]:
    """The previews in order (by epoch, then as stored), each assessment's scored samples
    last beside the test data they were scored against."""
    data = {(s.epoch, s.step): s.id for s in samples if s.name == "quality-data"}
    out = [Frame(s.id, s.name, s.epoch, s.step,
                 data.get((s.epoch, s.step)) if s.name == "quality" else None)
           for s in samples if s.name in ("vorticity", "quality")]
    return tuple(sorted(out, key=lambda f: (f.name == "quality", f.epoch, f.sample_id)))


# ----------------------------------------------------------------------------- previews


@dataclass(frozen=True, eq=False)
class FrameImages:
    """A frame's two rows as display values: generated above the data it is set against."""

    frame: Frame
    generated: tuple[np.ndarray, ...]
    data: tuple[np.ndarray, ...]
    data_title: str  # what the lower row is, or why it is missing


def load_frame(db: Database, frame: Frame, real: tuple[tuple[np.ndarray, ...], str]
               ) -> FrameImages:
    """Read one frame's bytes. ``real``: the validation row of the run's data set and its
    file (`preview.real_images`), the lower row of every epoch's preview."""
    _, generated = generated_images(db, frame.sample_id)
    if frame.name != "quality":
        return FrameImages(frame, generated, real[0], f"validation ({real[1]})" if real[0]
                           else real[1])
    if frame.data_id is None:
        return FrameImages(frame, generated, (), "no test data stored beside it")
    _, data = generated_images(db, frame.data_id)
    return FrameImages(frame, generated, data, "test data it was scored against")


# ----------------------------------------------------------------------------- events


@dataclass(frozen=True)
class Event:
    at: dt.datetime | None  # None: the database does not know when
    text: str
    style: str = ""


def worker_words(worker_id: int | None, workers: Mapping[int, Worker],
                 provenance: Mapping | None = None) -> str:
    """``worker 3 on host gpu-1 (pid 41, cuda:0, slurm 77_1)``, from what is known."""
    if worker_id is None:
        return "a worker"
    w = workers.get(worker_id)
    prov = provenance if provenance and provenance.get("worker_id") == worker_id else {}
    host = w.host if w else prov.get("host")
    parts = [f"pid {w.pid if w else prov.get('pid')}"] if (w or prov.get("pid")) else []
    if w:
        parts.append(w.device)
        if w.slurm_job:
            parts.append(f"slurm {w.slurm_job}")
    text = f"worker {worker_id}" + (f" on host {host}" if host else "")
    return text + (f" ({', '.join(parts)})" if parts else "")


def worker_state(worker: Worker, now: dt.datetime) -> str:
    if worker.stopped_at is not None:
        return "stopped"
    return "alive" if worker.alive(now, GRACE_S) else "dead"


def events(d: RunDetails) -> list[Event]:
    """The run's history as far as the database knows it, oldest first."""
    run, prov = d.run, d.run.provenance or {}
    extra = [f"priority {run.priority}"] if run.priority else []
    extra += [f"tags {', '.join(run.tags)}"] if run.tags else []
    out = [Event(run.created_at, "queued" + (f" ({'; '.join(extra)})" if extra else ""))]
    if not run.attempts:
        if run.status == Status.QUEUED:
            out.append(Event(None, "waiting for a worker", "dim"))
        return out + _end(d)
    latest = run.worker_id if run.worker_id is not None else prov.get("worker_id")
    if run.attempts == 1:
        out.append(Event(run.started_at, f"claimed by {worker_words(latest, d.workers, prov)}"
                                         ", attempt 1"))
    else:
        lost = int(prov.get(LOST_KEY, 0))
        out.append(Event(run.started_at, "first claimed (attempt 1)"))
        earlier = run.attempts - 1
        reasons = (f"{lost} lost {'its worker' if lost == 1 else 'their workers'} (lease "
                   "expired, requeued)" if lost else "")
        rest = earlier - lost
        if rest > 0:
            reasons += ("; " if reasons else "") + (
                f"{rest} handed back (released on a signal, or retried)")
        out.append(Event(None, f"{earlier} attempt{'s' if earlier > 1 else ''} before the "
                               f"last ended unfinished: {reasons}", "yellow"))
        out.append(Event(None, f"claimed by {worker_words(latest, d.workers, prov)}, "
                               f"attempt {run.attempts}: resumed from its last checkpoint "
                               "(which step is not stored)"))
    if prov.get("device"):
        device = prov.get("device_name") or prov.get("device")
        out.append(Event(None, f"started: provenance recorded ({prov.get('device')}"
                               + (f", {device}" if device != prov.get("device") else "")
                               + ")"))
    out.extend(_metrics(d))
    return out + _end(d)


def _metrics(d: RunDetails) -> list[Event]:
    if d.last_step is None:
        return []
    parts = [f"steps {d.first_step}–{d.last_step} recorded"]
    validated = sum(e.valid_loss is not None or e.fixed_valid_loss is not None
                    for e in d.epochs)
    if d.epochs:
        parts.append(f"{len(d.epochs)} epoch{'s' if len(d.epochs) > 1 else ''} "
                     f"({validated} validated)")
    previews = sum(f.name == "vorticity" for f in d.frames)
    if previews:
        parts.append(f"{previews} preview{'s' if previews > 1 else ''}")
    if (d.run.summary or {}).get("quality") is not None:
        parts.append("quality scored")
    return [Event(None, ", ".join(parts))]


def _end(d: RunDetails) -> list[Event]:
    run = d.run
    if run.status == Status.RUNNING:
        out = []
        if run.heartbeat_at is not None:
            age = max(0.0, (d.now - run.heartbeat_at).total_seconds())
            until = (f", lease until {run.lease_expires_at:%H:%M:%S}"
                     if run.lease_expires_at else "")
            out.append(Event(run.heartbeat_at, f"last heartbeat, {age:.0f} s ago{until}"))
        worker = d.workers.get(run.worker_id) if run.worker_id is not None else None
        if worker is not None and worker_state(worker, d.now) != "alive":
            out.append(Event(None, f"worker {worker.id} is {worker_state(worker, d.now)}: "
                                   "the run goes back to the queue when its lease expires",
                             "yellow"))
        if run.cancel_requested:
            out.append(Event(None, "cancel requested: stops after its current step", "yellow"))
        return out
    if run.status == Status.QUEUED:
        return ([Event(None, f"back in the queue: {run.error}", "yellow")]
                if run.error and run.attempts else [])
    if run.status == Status.CANCELLED and run.finished_at is None:
        return [Event(None, "cancelled while in the queue")]
    message = (run.summary or {}).get("message")
    text = f"finished: {run.status.value}" + (f", {message}" if message else "")
    if run.error:
        text += f": {run.error}"
    style = {Status.DONE: "green", Status.FAILED: "red", Status.DIVERGED: "magenta"}.get(
        run.status, "")
    return [Event(run.finished_at, text, style)]
