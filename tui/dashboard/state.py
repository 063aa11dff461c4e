"""What the dashboard shows, read from the job database incrementally (no Textual here).

`DashboardReader.refresh()` returns a frozen `Snapshot`: one `RunView` per run, the
workers with their recent load, counts by status and the newest calibration per device and
preset. Each tick it reads the runs' changing columns (status, steps done, worker; the other
table columns once per run), only the step, epoch and load rows added since its last read
(global row-id cursors), a run's provenance and times when its status changes, and the
calibrations when a new one appears, and rebuilds only the views of runs that changed, so a
refresh over 1,000 runs and 1,000,000 step rows costs about what changed. One refresh is one
short read transaction.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from sqlalchemy.orm import Session

from diffbench.storage import calibration, reads, workers
from diffbench.storage.db import Database
from diffbench.storage.results import mean_std
from diffbench.storage.states import Status
from diffbench.storage.step_ratios import Placement, shared_machine

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True)
class RunView:
    """One row of the runs table."""

    id: int
    status: str
    preset: str
    optimizer: str
    schedule: str
    lr: float
    wd: float
    seed: int
    epochs_done: int
    epochs_total: int | None
    progress: float | None  # 0..1
    steps: int
    train_loss: float | None  # the last step's loss
    valid_loss: float | None  # the last validation's (stochastic: fresh t and ε each time)
    final_loss: float | None  # fixed-noise validation loss at the end (done runs)
    ms_per_step: float | None  # mean over the run's steps
    eta_s: float | None  # running runs: remaining epochs × mean epoch time
    device: str | None
    worker_id: int | None
    tags: tuple[str, ...] = ()
    # the last validation's fixed-noise loss per t-bin (edges: the run's provenance
    # "loss_bins"); None before one, and for runs from before the bins were measured
    fixed_valid_bins: tuple[float, ...] | None = None
    # the last validation's fixed-noise loss (fixed t and ε: what the report ranks by)
    fixed_valid_loss: float | None = None
    device_key: str | None = None  # kind · name: step times compare on the same one only
    shared: bool = False  # trained while another run trained on its host
    step_ms: float | None = None  # calibrated ms/step of its device, preset and optimizer


@dataclass(frozen=True)
class WorkerView:
    id: int
    host: str
    pid: int
    device: str
    state: str  # alive, dead or stopped
    age_s: float  # since the last heartbeat
    run_id: int | None
    load: tuple[workers.LoadSample, ...] = ()  # the kept samples, oldest first


@dataclass(frozen=True)
class Snapshot:
    runs: tuple[RunView, ...]
    workers: tuple[WorkerView, ...]
    counts: dict[str, int]
    now: dt.datetime
    calibrations: dict[tuple[str, str], calibration.Calibration] = field(default_factory=dict)


@dataclass
class _Steps:
    count: int = 0
    ms_sum: float = 0.0
    step: int = 0
    loss: float = math.nan


@dataclass
class _Epochs:
    done: int = 0
    steps_per_epoch: int | None = None
    epoch_s: float = 0.0
    train_loss: float | None = None
    valid_loss: float | None = None
    fixed_valid_loss: float | None = None
    fixed_valid_bins: tuple[float, ...] | None = None  # the latest measured


@dataclass
class DashboardReader:
    """Holds the cursors, per-run aggregates and views between refreshes. Not thread-safe:
    one refresh at a time (the app skips a tick while one is in flight).

    A refresh rebuilds the `RunView` of a run only when something it shows changed (its
    marks, new step or epoch rows, its device); the others are the same objects as last
    time, which lets the UI skip them by identity."""

    db: Database
    clock: Clock | None = None  # None: the database clock; tests pin a time
    grace_s: float = 60.0  # a worker silent this long is dead
    _lines: dict[int, reads.RunLine] = field(default_factory=dict)
    _marks: dict[int, tuple] = field(default_factory=dict)
    _views: dict[int, RunView] = field(default_factory=dict)
    _order: list[int] = field(default_factory=list)
    _steps: dict[int, _Steps] = field(default_factory=dict)
    _epochs: dict[int, _Epochs] = field(default_factory=dict)
    _placed: dict[int, tuple[Status, Placement]] = field(default_factory=dict)
    _shared: set[int] = field(default_factory=set)
    _calibrations: dict = field(default_factory=dict)
    _calibration_id: int = 0
    _load: dict[int, deque] = field(default_factory=dict)
    _step_cursor: int | None = None
    _epoch_cursor: int = 0
    _load_cursor: int = 0

    def refresh(self) -> Snapshot:
        with self.db.session() as session:  # one read transaction: a consistent view
            changed = (self._read_lines(session) | self._read_steps(session)
                       | self._read_epochs(session))
            changed |= self._read_placements(session, changed)
            changed |= self._read_calibrations(session)
            workers = reads.workers(session)
            self._read_load(session)
            now = self.clock() if self.clock is not None else reads.database_now(session)
        for run_id in changed & self._lines.keys():
            self._views[run_id] = self._view(self._lines[run_id])
        counts = {s.value: 0 for s in Status}
        for status, *_ in self._marks.values():
            counts[status] += 1
        running = {line.mark.worker_id: line.id for line in self._lines.values()
                   if line.mark.status == Status.RUNNING}
        return Snapshot(runs=tuple(self._views[i] for i in self._order),
                        workers=tuple(self._worker(w, running.get(w.id), now)
                                      for w in workers),
                        counts=counts, now=now, calibrations=self._calibrations)

    # ------------------------------------------------------------------ reads

    def _read_lines(self, session: Session) -> set[int]:
        """Compare every run's marks with the last ones; read whole lines of new runs only.
        Returns the runs that are new or changed."""
        marks = reads.run_marks(session)
        gone = self._lines.keys() - marks.keys()
        for run_id in gone:
            for table in (self._lines, self._views, self._steps, self._epochs, self._placed):
                table.pop(run_id, None)
        new = [run_id for run_id in marks if run_id not in self._lines]
        if new:
            lines = reads.run_lines(session, None if not self._lines else new)
            self._lines.update((line.id, line) for line in lines)
        changed = set(new)
        for run_id, values in marks.items():
            if run_id not in changed and self._marks.get(run_id) != values:
                self._lines[run_id] = replace(self._lines[run_id], mark=reads.mark(values))
                changed.add(run_id)
        self._marks = marks
        if gone or new:
            self._order = sorted(self._lines)
        return changed

    def _read_steps(self, session: Session) -> set[int]:
        """Fold the step rows added since the cursor into each run's aggregates (one
        grouped query: the rows themselves never cross into Python)."""
        first = self._step_cursor is None
        totals, top = reads.step_totals(session, after_id=self._step_cursor or 0)
        rewound = set()
        for run_id, t in totals.items():
            agg = self._steps.setdefault(run_id, _Steps())
            if not first and t.first_step <= agg.step:  # a resumed run rewrote steps
                rewound.add(run_id)
            agg.count += t.count
            agg.ms_sum += t.ms_sum
            agg.step, agg.loss = t.last.step, t.last.loss
        self._step_cursor = max(top, self._step_cursor or 0)
        if rewound:  # recount those runs from scratch
            again, _ = reads.step_totals(session, rewound)
            for run_id in rewound:
                t = again.get(run_id)
                self._steps[run_id] = (_Steps() if t is None else
                                       _Steps(t.count, t.ms_sum, t.last.step, t.last.loss))
        return set(totals)

    def _read_epochs(self, session: Session) -> set[int]:
        rows = reads.epochs_after(session, self._epoch_cursor)
        for e in rows:
            agg = self._epochs.setdefault(e.run_id, _Epochs())
            if e.epoch + 1 <= agg.done:  # rewound by a resume
                agg.done, agg.epoch_s = e.epoch, agg.epoch_s * e.epoch / agg.done
            agg.done = e.epoch + 1
            if e.epoch == 0:
                agg.steps_per_epoch = e.step
            agg.epoch_s += _finite(e.epoch_s) or 0.0
            agg.train_loss = _finite(e.train_loss)
            if e.valid_loss is not None:
                agg.valid_loss = e.valid_loss
            if e.fixed_valid_loss is not None:
                agg.fixed_valid_loss = e.fixed_valid_loss
            if e.fixed_valid_bins is not None:
                agg.fixed_valid_bins = e.fixed_valid_bins
        if rows:
            self._epoch_cursor = rows[-1].id
        return {e.run_id for e in rows}

    def _read_placements(self, session: Session, changed: set[int]) -> set[int]:
        """Device, host and times of each changed run whose status moved (or whose device
        is not known yet) since they were read; when any moved, which runs shared a host
        (`shared_machine`). Returns the runs whose view that changes."""
        stale = [run_id for run_id in changed & self._lines.keys()
                 if (status := self._lines[run_id].mark.status) != Status.QUEUED
                 and (run_id not in self._placed or self._placed[run_id][0] != status
                      or self._placed[run_id][1].device is None)]
        if not stale:
            return set()
        found = reads.run_placements(session, stale)
        for run_id in stale:
            if run_id in found:
                self._placed[run_id] = (self._lines[run_id].mark.status, found[run_id])
        shared = shared_machine({i: p for i, (_, p) in self._placed.items()})
        moved = shared ^ self._shared
        self._shared = shared
        return moved | set(found)

    def _read_calibrations(self, session: Session) -> set[int]:
        """The newest calibration per device and preset, read again only when a new one
        was stored (one max(id) per tick); then every view (their time axes) changes."""
        newest = calibration.newest_calibration_id(session)
        if newest == self._calibration_id:
            return set()
        self._calibration_id = newest
        self._calibrations = calibration.latest(calibration.read_calibrations(session))
        return set(self._lines)

    def _read_load(self, session: Session) -> None:
        """The workers' load samples past the cursor, into a short history per worker."""
        rows = reads.load_after(session, self._load_cursor)
        for _, worker_id, sample in rows:
            self._load.setdefault(worker_id, deque(maxlen=workers.KEEP_LOAD)).append(sample)
        if rows:
            self._load_cursor = rows[-1][0]

    # ------------------------------------------------------------------ views

    def _view(self, line: reads.RunLine) -> RunView:
        steps = self._steps.get(line.id, _Steps())
        epochs = self._epochs.get(line.id, _Epochs())
        placement = self._placed.get(line.id, (None, _NOWHERE))[1]
        total = line.epochs
        status = line.mark.status.value
        progress = None
        if status == Status.DONE:
            progress = 1.0
        elif total:
            if epochs.steps_per_epoch:
                progress = min(1.0, steps.step / (epochs.steps_per_epoch * total))
            else:
                progress = min(1.0, epochs.done / total)
        eta = None
        if status == Status.RUNNING and total and epochs.done and progress is not None:
            eta = (1.0 - progress) * total * epochs.epoch_s / epochs.done
        final = None
        if status == Status.DONE:
            final = (epochs.fixed_valid_loss if epochs.fixed_valid_loss is not None
                     else epochs.valid_loss)
        return RunView(
            id=line.id, status=status, preset=line.preset, optimizer=line.optimizer,
            schedule=line.schedule, lr=line.lr, wd=line.weight_decay, seed=line.seed,
            epochs_done=epochs.done, epochs_total=total, progress=progress,
            steps=max(steps.step, line.mark.steps_done),
            train_loss=steps.loss if steps.count else epochs.train_loss,
            valid_loss=epochs.valid_loss, final_loss=final,
            ms_per_step=steps.ms_sum / steps.count if steps.count else None,
            eta_s=eta, device=placement.name, worker_id=line.mark.worker_id,
            tags=line.tags, fixed_valid_bins=epochs.fixed_valid_bins,
            fixed_valid_loss=epochs.fixed_valid_loss, device_key=placement.device,
            shared=line.id in self._shared,
            step_ms=calibration.calibrated_ms(self._calibrations, placement.device,
                                              line.preset, line.optimizer))

    def _worker(self, worker: workers.Worker, run_id: int | None,
                now: dt.datetime) -> WorkerView:
        if worker.stopped_at is not None:
            state = "stopped"
        else:
            state = "alive" if worker.alive(now, self.grace_s) else "dead"
        return WorkerView(id=worker.id, host=worker.host, pid=worker.pid,
                          device=worker.device, state=state,
                          age_s=max(0.0, (now - worker.heartbeat_at).total_seconds()),
                          run_id=run_id, load=tuple(self._load.get(worker.id, ())))


_NOWHERE = Placement(None, None, None, None)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


# ----------------------------------------------------------------------------- derived


@dataclass(frozen=True)
class GroupView:
    """Runs that differ only in their seed (the same preset, epochs, optimizer, schedule, lr
    and wd: the report's setting): the final loss as mean ± sample std over seeds, as the
    report gives it (`storage.results.mean_std`: no std for one seed)."""

    preset: str
    epochs: int | None
    optimizer: str
    schedule: str
    lr: float
    wd: float
    runs: int
    done: int
    mean: float | None
    std: float | None
    ms_per_step: float | None
    run_ids: tuple[int, ...]


def group_runs(runs: Iterable[RunView]) -> list[GroupView]:
    """Group by setting (preset, epochs, optimizer, schedule, lr, wd), ordered by preset,
    optimizer, then mean final loss."""
    groups: dict[tuple[str, int | None, str, str, float, float], list[RunView]] = {}
    for run in runs:
        key = (run.preset, run.epochs_total, run.optimizer, run.schedule, run.lr, run.wd)
        groups.setdefault(key, []).append(run)
    out = []
    for (preset, epochs, optimizer, schedule, lr, wd), members in groups.items():
        finals = [r.final_loss for r in members
                  if r.final_loss is not None and math.isfinite(r.final_loss)]
        mean, std = mean_std(finals) if finals else (None, None)
        times = [r.ms_per_step for r in members if r.ms_per_step is not None]
        out.append(GroupView(
            preset=preset, epochs=epochs, optimizer=optimizer, schedule=schedule, lr=lr,
            wd=wd, runs=len(members), done=sum(r.status == Status.DONE for r in members),
            mean=mean, std=std, ms_per_step=statistics.fmean(times) if times else None,
            run_ids=tuple(r.id for r in members)))
    return sorted(out, key=lambda g: (g.preset, g.optimizer, g.mean is None, g.mean or 0.0,
                                      g.lr, g.epochs or 0))
