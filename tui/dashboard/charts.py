"""What the curves pane draws, computed without Textual (NumPy only).

One `Trace` per plotted run, group of seeds or the pinned reference, in one of two views:

* loss: the training loss (a line) and the fixed-noise validation loss (points: the one the
  report ranks by; the stochastic one only for runs that never measured it) against step,
  epoch or training time;
* t-bins: the last validation's fixed-noise loss per noise-level bin of diffusion time t.

A group's seeds are put on one x grid (where all of them have data) and drawn as their mean
with a ±std band (sample std; no band for one seed), as the report gives final losses.
Smoothing is an exponential moving average with TensorBoard's debiasing, over the plotted
points (each already a mean of consecutive steps: `series.binned`), the raw curve kept to
be drawn faint behind it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from diffbench.storage.step_ratios import SHARED

from .series import Curve, RunCurves
from .state import GroupView, RunView

XAXES = ("step", "time", "epoch")  # `t` cycles through them in this order
X_TITLES = {"step": "step", "epoch": "epoch", "time": "training time (s)"}
CALIBRATED = "calibrated training time (s)"  # steps × each run's calibrated ms/step


def time_title(runs: Iterable[RunView]) -> tuple[str, str | None]:
    """The time axis' title for the plotted runs, calibrated (every run has a calibration
    of its device, preset and optimizer), measured or mixed, and the caveat to show when a
    run timed by itself shared its machine (the title then ends in †)."""
    runs = list(runs)
    calibrated = [r.step_ms is not None for r in runs]
    if runs and all(calibrated):
        return CALIBRATED, None
    title = X_TITLES["time"] if not any(calibrated) else "training time (s, part calibrated)"
    if any(r.shared for r, c in zip(runs, calibrated, strict=True) if not c):
        return f"{title} †", f"† {SHARED} (no calibration: diffbench calibrate)"
    return title, None


SMOOTHING = (0.6, 0.8, 0.9, 0.95, 0.99)  # the EMA factors `M` cycles through
REFERENCE = ("adamw", "linear")  # the paper's baseline: AdamW with its linear schedule
AUTO = "auto"  # the reference is chosen (`default_reference`) rather than pinned
GRID = 200  # points of a group's common x grid


@dataclass(frozen=True)
class ChartOptions:
    """The curves pane's settings, changed by its keys."""

    view: str = "loss"  # "loss" or "bins"
    x: str = "step"  # one of XAXES
    log_x: bool = False
    log_y: bool = True
    smooth: bool = False
    factor: float = 0.9  # the EMA factor when smoothing

    def next_x(self) -> ChartOptions:
        return replace(self, x=XAXES[(XAXES.index(self.x) + 1) % len(XAXES)])

    def next_factor(self) -> ChartOptions:
        later = [f for f in SMOOTHING if f > self.factor]
        return replace(self, smooth=True, factor=later[0] if later else SMOOTHING[0])


@dataclass(frozen=True)
class Trace:
    """One plotted run or group (or the reference), ready to draw."""

    label: str  # for the legend
    optimizer: str
    run_ids: tuple[int, ...]
    seeds: int  # runs with data averaged into it (1: one run, drawn as it is)
    line: Curve  # train loss (smoothed if asked) or the loss per t-bin
    raw: Curve | None = None  # the unsmoothed line, drawn faint behind a smoothed one
    band: tuple[Curve, Curve] | None = None  # mean − std, mean + std (two seeds or more)
    points: Curve | None = None  # validation losses
    stochastic: bool = False  # the points are the stochastic validation loss
    reference: bool = False


# ----------------------------------------------------------------------------- maths


def ema(y: Sequence[float], factor: float) -> tuple[float, ...]:
    """TensorBoard's smoothing: an EMA started at 0 and divided by 1 − factor^k, so the
    first points are not pulled towards zero."""
    out, last = [], 0.0
    for k, value in enumerate(y, 1):
        last = factor * last + (1.0 - factor) * value
        out.append(last / (1.0 - factor ** k))
    return tuple(out)


def seeds_mean(curves: Sequence[Curve], *, log_x: bool = False, points: int = GRID
               ) -> tuple[Curve, tuple[Curve, Curve] | None, int]:
    """The seeds' mean curve and ±std band on a grid over the x range all of them cover
    (geometric with ``log_x``), and how many seeds it averages. One seed: its curve, no
    band; none: an empty curve."""
    usable = [c for c in curves if c.x]
    if len(usable) <= 1:
        return (usable[0] if usable else Curve((), ())), None, len(usable)
    low, high = max(c.x[0] for c in usable), min(c.x[-1] for c in usable)
    if high <= low:  # one point each, or no common range: the points' mean
        ys = np.array([c.y[-1] for c in usable])
        return Curve((high,), (float(ys.mean()),)), None, len(usable)
    grid = (np.geomspace(low, high, points) if log_x and low > 0
            else np.linspace(low, high, points))
    ys = np.stack([np.interp(grid, c.x, c.y) for c in usable])  # (seeds, points)
    mean, std = ys.mean(axis=0), ys.std(axis=0, ddof=1)
    x = tuple(grid.tolist())
    return (Curve(x, tuple(mean.tolist())),
            (Curve(x, tuple((mean - std).tolist())), Curve(x, tuple((mean + std).tolist()))),
            len(usable))


def points_mean(curves: Sequence[Curve]) -> Curve:
    """The k-th validation of every seed averaged (x and y), for k up to the fewest."""
    usable = [c for c in curves if c.x]
    if not usable:
        return Curve((), ())
    n = min(len(c.x) for c in usable)
    x = np.mean([c.x[:n] for c in usable], axis=0)
    y = np.mean([c.y[:n] for c in usable], axis=0)
    return Curve(tuple(x.tolist()), tuple(y.tolist()))


def _scaled(curve: Curve, divisor: float | None) -> Curve | None:
    if not divisor:
        return None
    return Curve(tuple(x / divisor for x in curve.x), curve.y)


def run_curves(curves: RunCurves, x: str, step_ms: float | None = None
               ) -> tuple[Curve | None, Curve | None, bool]:
    """A run's train curve and validation points against ``x`` (None: not known yet, an
    epoch axis before the first epoch ended), and whether the points are the stochastic
    validation loss (a run that never measured the fixed-noise one). With ``step_ms`` (a
    calibration's ms/step), training time is steps × it rather than the measured sum."""
    fixed = bool(curves.fixed_by_step.x)
    valid_step = curves.fixed_by_step if fixed else curves.valid_by_step
    if x == "time" and step_ms:
        per = 1000.0 / step_ms  # steps per second
        return _scaled(curves.train_by_step, per), _scaled(valid_step, per), \
            not fixed and bool(valid_step.x)
    if x == "time":
        return (curves.train_by_time, curves.fixed_by_time if fixed else curves.valid_by_time,
                not fixed and bool(valid_step.x))
    if x == "epoch":
        per = curves.steps_per_epoch
        return _scaled(curves.train_by_step, per), _scaled(valid_step, per), \
            not fixed and bool(valid_step.x)
    return curves.train_by_step, valid_step, not fixed and bool(valid_step.x)


# ----------------------------------------------------------------------------- selection


def default_reference(runs: Iterable[RunView], preset: str | None) -> int | None:
    """The paper's baseline, AdamW with the linear schedule: of the runs that have trained,
    one of ``preset`` before others, finished before unfinished, the lowest final loss,
    then the lowest id. None without such a run."""
    candidates = [r for r in runs if (r.optimizer, r.schedule) == REFERENCE and r.steps]
    if not candidates:
        return None
    return min(candidates, key=lambda r: (
        r.preset != preset, r.final_loss is None or not math.isfinite(r.final_loss),
        r.final_loss if r.final_loss is not None and math.isfinite(r.final_loss) else 0.0,
        r.id)).id


def plotted(views: Mapping[int, RunView], *, selected: int | None, marked: Iterable[int],
            groups: Sequence[GroupView] | None) -> list[tuple[RunView, ...]]:
    """The runs of each plotted item: ungrouped, the selected run then the marked ones;
    grouped (``groups``), the selected run's group then every group with a marked run."""
    order = [i for i in (selected, *sorted(marked)) if i is not None and i in views]
    if groups is None:
        return [(views[i],) for i in dict.fromkeys(order)]
    by_run = {run_id: g for g in groups for run_id in g.run_ids}
    chosen = dict.fromkeys(by_run[i] for i in order if i in by_run)
    return [tuple(views[i] for i in g.run_ids if i in views) for g in chosen]


def reference_runs(views: Mapping[int, RunView], run_id: int | None,
                   groups: Sequence[GroupView] | None) -> tuple[RunView, ...]:
    """The reference run, or (grouped) its group's runs; () without one."""
    if run_id is None or run_id not in views:
        return ()
    if groups is not None:
        for group in groups:
            if run_id in group.run_ids:
                return tuple(views[i] for i in group.run_ids if i in views)
    return (views[run_id],)


# ----------------------------------------------------------------------------- traces


def _label(runs: Sequence[RunView], seeds: int, grouped: bool, reference: bool,
           wd: bool = True) -> str:
    first = runs[0]
    if not grouped:
        return (f"reference #{first.id} {first.optimizer}·{first.schedule} lr {first.lr:.3g}"
                if reference else f"#{first.id} {first.optimizer}")
    setting = f"{first.optimizer}·{first.schedule} lr {first.lr:.3g}"
    if wd:
        setting += f" wd {first.wd:.3g}"
    if reference:  # drawn without its band, in the reference's style
        setting = f"reference {setting}" + ("" if wd else f" wd {first.wd:.3g}")
        return f"{setting}: mean over {seeds} seeds" if seeds >= 2 else setting
    if seeds >= 2:
        return f"{setting}: mean ± std over {seeds} seeds"
    return f"{setting}: 1 seed" if seeds else f"{setting}: no data yet"


def loss_trace(runs: Sequence[RunView], curves: Mapping[int, RunCurves],
               options: ChartOptions, *, grouped: bool, reference: bool = False,
               wd: bool = True) -> Trace | None:
    """The loss view of one run or group (None: nothing to draw against this x axis)."""
    trains, valids, stochastic = [], [], False
    for run in runs:
        if run.id not in curves:
            continue
        train, valid, noisy = run_curves(curves[run.id], options.x, run.step_ms)
        if train is not None and train.x:
            trains.append(train)
        if valid is not None and valid.x:
            valids.append(valid)
            stochastic |= noisy
    if not trains and not valids:
        return None
    line, band, seeds = seeds_mean(trains, log_x=options.log_x)
    points = points_mean(valids) if valids else None
    raw = None
    if options.smooth and len(line.y) > 2:
        raw, line = line, Curve(line.x, ema(line.y, options.factor))
        if band is not None:
            band = tuple(Curve(b.x, ema(b.y, options.factor)) for b in band)
    return Trace(label=_label(runs, max(seeds, len(valids)), grouped, reference, wd),
                 optimizer=runs[0].optimizer,
                 run_ids=tuple(r.id for r in runs), seeds=seeds, line=line, raw=raw,
                 band=band, points=points, stochastic=stochastic, reference=reference)


def bins_trace(runs: Sequence[RunView], *, grouped: bool, reference: bool = False,
               wd: bool = True) -> Trace | None:
    """The t-bin view of one run or group: the last validation's fixed-noise loss per bin
    (x = bin number 1…n), mean ± std over the seeds that measured the same bins."""
    measured = [r.fixed_valid_bins for r in runs if r.fixed_valid_bins]
    if not measured:
        return None
    n = len(measured[0])
    values = np.array([m for m in measured if len(m) == n], dtype=np.float64)
    x = tuple(float(i) for i in range(1, n + 1))
    mean = values.mean(axis=0)
    band = None
    if len(values) >= 2:
        std = values.std(axis=0, ddof=1)
        band = (Curve(x, tuple((mean - std).tolist())), Curve(x, tuple((mean + std).tolist())))
    return Trace(label=_label(runs, len(values), grouped, reference, wd),
                 optimizer=runs[0].optimizer,
                 run_ids=tuple(r.id for r in runs), seeds=len(values),
                 line=Curve(x, tuple(mean.tolist())), band=band, reference=reference)


def traces(items: Sequence[tuple[RunView, ...]], reference: tuple[RunView, ...],
           curves: Mapping[int, RunCurves], options: ChartOptions, *, grouped: bool
           ) -> list[Trace]:
    """The reference first (when it is not one of ``items``), then each item's trace."""
    out = []
    drawn = {r.id for item in items for r in item}
    wd = len({runs[0].wd for runs in items if runs}) > 1  # in labels when it tells apart
    for runs, is_reference in ((reference, True), *((item, False) for item in items)):
        if not runs or (is_reference and drawn & {r.id for r in runs}):
            continue
        trace = (bins_trace(runs, grouped=grouped, reference=is_reference, wd=wd)
                 if options.view == "bins" else
                 loss_trace(runs, curves, options, grouped=grouped, reference=is_reference,
                            wd=wd))
        if trace is not None:
            out.append(trace)
    return out


def bin_ticks(edges: Sequence[float] | None, n: int) -> tuple[list[float], list[str]]:
    """Tick positions 1…n and labels: each bin's upper edge of t (``.2`` … ``1``), or its
    number when the edges are unknown or do not fit ``n`` bins."""
    positions = [float(i) for i in range(1, n + 1)]
    if edges is None or len(edges) != n + 1:
        return positions, [str(i) for i in range(1, n + 1)]
    return positions, [f"{e:g}".removeprefix("0") or "0" for e in edges[1:]]
