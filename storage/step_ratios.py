"""Step-time ratios that compare, as pure functions (the report's `results.summarize` and the
dashboard's runtime pane share them; `storage.calibration` reads the calibrations).

The rules (docs/REPORT.md says the same for users):

- Two step times compare only when measured on the same device (kind and name: `device_label`,
  e.g. ``cuda · NVIDIA H100 80GB HBM3``) **and** the same preset (model, data and batch size
  set the step's work). Elsewhere a ratio is "not comparable", and says why.
- A calibration of that device and preset (`diffbench calibrate`: each optimizer's full
  step timed side by side in interleaved rounds) gives the ratio first: the ratio of the
  optimizers' mean ms/step, its spread the range of the per-round ratios (each round times
  every optimizer under the same machine state, so its ratio is a fair pair).
- Without one, the runs' own mean ms/step: the ratio of the means over runs, its spread the
  range every pair of runs falls in (slowest over fastest, and the other way). Such times
  carry a caveat when a run was measured while another run shared its machine: their
  [started, finished] intervals overlap on one host (`shared_machine`).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

SHARED = "measured while runs shared the machine"
CALIBRATION, RUNS = "calibration", "runs"


def device_label(provenance: Mapping[str, Any] | None) -> str | None:
    """Device kind and name, without the index (two identical GPUs are one device)."""
    if not provenance or not provenance.get("device"):
        return None
    kind = str(provenance["device"]).split(":")[0]
    name = provenance.get("device_name")
    return f"{kind} · {name}" if name else kind


@dataclass(frozen=True)
class Placement:
    """Where and when a run trained: its device label, host, first claim and finish (None:
    still running, or it never finished); ``name``: the device as `runs.device_of` names it."""

    device: str | None
    host: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    name: str | None = None


def shared_machine(placements: Mapping[int, Placement]) -> set[int]:
    """The runs whose training overlapped another run's on the same host (an unfinished run
    lasts until now). Sorted by start per host: a run overlaps an earlier one when it starts
    before the latest end so far, and a later one when it ends after the next start."""
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    by_host: dict[str, list[tuple[dt.datetime, dt.datetime, int]]] = {}
    for run_id, p in placements.items():
        if p.host is not None and p.started_at is not None:
            end = p.finished_at or far
            by_host.setdefault(p.host, []).append((p.started_at, end, run_id))
    shared: set[int] = set()
    for spans in by_host.values():
        spans.sort()
        latest = None
        for index, (start, end, run_id) in enumerate(spans):
            if latest is not None and start < latest:
                shared.add(run_id)
            if index + 1 < len(spans) and end > spans[index + 1][0]:
                shared.add(run_id)
            latest = end if latest is None else max(latest, end)
    return shared


@dataclass(frozen=True)
class Spread:
    """A ratio of mean step times and the range it spans (see the module's rules)."""

    value: float
    low: float
    high: float
    samples: int  # the runs or rounds behind the numerator

    def text(self) -> str:
        if abs(self.high - self.low) < 0.005:
            return f"{self.value:.2f}×"
        return f"{self.value:.2f}× ({self.low:.2f}–{self.high:.2f})"


def runs_ratio(mine: Sequence[float], base: Sequence[float]) -> Spread:
    """Mean over mean; the range from the fastest of ``mine`` over the slowest of ``base`` to
    the slowest over the fastest."""
    return Spread(statistics.fmean(mine) / statistics.fmean(base), min(mine) / max(base),
                  max(mine) / min(base), len(mine))


def rounds_ratio(mine: Sequence[float], base: Sequence[float]) -> Spread:
    """Paired rounds of one calibration: mean over mean; the range of the rounds' ratios."""
    pairs = [m / b for m, b in zip(mine, base, strict=True)]
    return Spread(statistics.fmean(mine) / statistics.fmean(base), min(pairs), max(pairs),
                  len(pairs))


class Timed(Protocol):
    """What a run must tell to be compared (the report's `RunResult`, the dashboard's view)."""

    optimizer: str
    preset: str
    ms_per_step: float | None
    shared: bool

    @property
    def device_key(self) -> str | None: ...


class Calibrated(Protocol):
    """A calibration as the rules need it (`storage.calibration.Calibration`)."""

    id: int

    def ratio(self, optimizer: str, base: str) -> Spread | None: ...


Calibrations = Mapping[tuple[str, str], Calibrated]  # the latest per (device, preset)


@dataclass(frozen=True)
class StepRatio:
    """A step-time ratio where it compares (``ratio``), else why not (``why``)."""

    ratio: Spread | None
    source: str | None = None  # CALIBRATION or RUNS
    device: str | None = None
    preset: str | None = None
    why: str | None = None  # not comparable: the reason
    caveat: str | None = None  # run-measured while runs shared the machine: SHARED
    calibration: int | None = None  # its id

    def text(self) -> str:
        if self.ratio is None:
            return f"not comparable ({self.why})"
        mark = " cal." if self.source == CALIBRATION else ""
        return self.ratio.text() + mark + (" †" if self.caveat else "")


def _timed(runs: Iterable[Timed]) -> dict[tuple[str, str], list[Timed]]:
    out: dict[tuple[str, str], list[Timed]] = {}
    for run in runs:
        if run.device_key is not None and run.ms_per_step is not None:
            out.setdefault((run.device_key, run.preset), []).append(run)
    return out


def _why(mine: Mapping[tuple[str, str], Any], theirs: Mapping[tuple[str, str], Any]) -> str:
    if not mine:
        return "no step times"
    if not theirs:
        return "no baseline step times"
    if {d for d, _ in mine} & {d for d, _ in theirs}:
        return "other preset"
    return "other device"


def step_ratio(runs: Sequence[Timed], baseline: Sequence[Timed],
               calibrations: Calibrations | None = None) -> StepRatio:
    """``runs``' step time over ``baseline``'s: from a calibration of the device and preset
    that most of ``runs`` trained on when it timed both optimizers, else from runs on a
    device and preset both trained on (the one most of ``runs`` used), else not comparable."""
    mine, theirs = _timed(runs), _timed(baseline)
    if not mine or not theirs:
        return StepRatio(None, why=_why(mine, theirs))
    base = baseline[0].optimizer
    for key in sorted(mine, key=lambda k: (-len(mine[k]), k)):
        calibration = (calibrations or {}).get(key)
        ratio = None if calibration is None else calibration.ratio(runs[0].optimizer, base)
        if ratio is not None:
            return StepRatio(ratio, CALIBRATION, *key, calibration=calibration.id)
    shared = sorted(set(mine) & set(theirs), key=lambda k: (-len(mine[k]), k))
    if not shared:
        return StepRatio(None, why=_why(mine, theirs))
    key = shared[0]
    used = mine[key] + theirs[key]
    ratio = runs_ratio([r.ms_per_step for r in mine[key]], [r.ms_per_step for r in theirs[key]])
    return StepRatio(ratio, RUNS, *key, caveat=SHARED if any(r.shared for r in used) else None)
