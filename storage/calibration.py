"""Calibrations: each optimizer's ms per full training step (data + forward/backward +
optimizer), timed side by side in interleaved rounds on one device and preset by
`diffbench calibrate` (`tui.runner.calibrate`), kept in the ``calibrations`` and
``calibration_times`` tables (revision 0005).

The report and the dashboard take the newest calibration of each (device, preset) for
step-time ratios (`storage.step_ratios`) and for a time axis (steps × its ms/step) that no
other run's load distorts.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from diffbench.storage.db import Database
from diffbench.storage.schema import CalibrationRow, CalibrationTimeRow, stamp
from diffbench.storage.step_ratios import Spread, rounds_ratio


@dataclass(frozen=True)
class OptimizerTime:
    """One optimizer in a calibration: ms per step, mean and sample std over the rounds
    (None for one round), and each round's mean."""

    optimizer: str
    implementation: str | None
    ms_per_step: float
    ms_std: float | None
    rounds_ms: tuple[float, ...]


@dataclass(frozen=True)
class Calibration:
    id: int
    device: str  # kind · name (`step_ratios.device_label`)
    preset: str
    host: str
    created_at: dt.datetime
    rounds: int
    steps: int  # per optimizer and round
    settings: dict[str, Any] = field(default_factory=dict)
    times: tuple[OptimizerTime, ...] = ()

    def time(self, optimizer: str) -> OptimizerTime | None:
        return next((t for t in self.times if t.optimizer == optimizer), None)

    def ms(self, optimizer: str) -> float | None:
        """The optimizer's mean ms per step, None if it was not calibrated."""
        time = self.time(optimizer)
        return None if time is None else time.ms_per_step

    def ratio(self, optimizer: str, base: str) -> Spread | None:
        """``optimizer``'s step time over ``base``'s (paired rounds), None unless both were
        timed."""
        mine, theirs = self.time(optimizer), self.time(base)
        if mine is None or theirs is None:
            return None
        return rounds_ratio(mine.rounds_ms, theirs.rounds_ms)


def save_calibration(db: Database, *, device: str, preset: str, host: str, steps: int,
                     rounds_ms: Mapping[str, Sequence[float]],
                     implementations: Mapping[str, str] | None = None,
                     settings: Mapping[str, Any] | None = None,
                     now: dt.datetime | None = None) -> Calibration:
    """Store one calibration: per optimizer, the mean ms per step of each timed round (every
    optimizer the same number of rounds)."""
    counts = {len(values) for values in rounds_ms.values()}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"every optimizer needs the same number (≥ 1) of rounds: {counts}")
    with db.session(write=True) as session:
        row = CalibrationRow(device=device, preset=preset, host=host, created_at=stamp(now),
                             rounds=counts.pop(), steps=int(steps),
                             settings=dict(settings or {}))
        session.add(row)
        session.flush()
        for optimizer, values in rounds_ms.items():
            values = [float(v) for v in values]
            session.add(CalibrationTimeRow(
                calibration_id=row.id, optimizer=optimizer,
                implementation=(implementations or {}).get(optimizer),
                ms_per_step=statistics.fmean(values),
                ms_std=statistics.stdev(values) if len(values) > 1 else None,
                rounds_ms=values))
        calibration_id = row.id
    (calibration,) = calibrations(db, ids=[calibration_id])
    return calibration


def read_calibrations(session: Session, ids: Iterable[int] | None = None
                      ) -> list[Calibration]:
    """Every calibration (or those of ``ids``), oldest first, with its times."""
    query = sa.select(CalibrationRow).order_by(CalibrationRow.id)
    if ids is not None:
        query = query.where(CalibrationRow.id.in_(list(ids)))
    rows = list(session.scalars(query))
    times: dict[int, list[OptimizerTime]] = {}
    if rows:
        for t in session.scalars(sa.select(CalibrationTimeRow)
                                 .where(CalibrationTimeRow.calibration_id.in_(
                                     [r.id for r in rows]))
                                 .order_by(CalibrationTimeRow.id)):
            times.setdefault(t.calibration_id, []).append(OptimizerTime(
                t.optimizer, t.implementation, t.ms_per_step, t.ms_std, tuple(t.rounds_ms)))
    return [Calibration(r.id, r.device, r.preset, r.host, r.created_at, r.rounds, r.steps,
                        dict(r.settings or {}), tuple(times.get(r.id, ()))) for r in rows]


def newest_calibration_id(session: Session) -> int:
    """The largest calibration id (0: none): a poller reads them again when it moves."""
    return session.scalar(sa.select(sa.func.max(CalibrationRow.id))) or 0


def calibrations(db: Database, ids: Iterable[int] | None = None) -> list[Calibration]:
    with db.session() as session:
        return read_calibrations(session, ids)


def latest(calibrations: Iterable[Calibration]) -> dict[tuple[str, str], Calibration]:
    """The newest calibration of each (device, preset)."""
    out: dict[tuple[str, str], Calibration] = {}
    for calibration in sorted(calibrations, key=lambda c: c.id):
        out[calibration.device, calibration.preset] = calibration
    return out


def calibrated_ms(table: Mapping[tuple[str, str], Calibration], device: str | None,
                  preset: str, optimizer: str) -> float | None:
    """The calibrated ms per step of an optimizer on a device and preset, if any."""
    calibration = table.get((device, preset)) if device is not None else None
    return None if calibration is None else calibration.ms(optimizer)
