"""The report's figures as PNG bytes (matplotlib's object API on the Agg canvas: no pyplot,
no global state, no display needed). Imported only by `diffbench report`.

Each function takes aggregated results (`storage.results`) and returns PNG bytes, or None
when it has nothing to draw; the report then says why instead of showing an empty plot.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from diffbench.engine.vocabulary import QUALITY_SCORES, optimizer_hex
from diffbench.engine.vorticity import display_vorticity
from diffbench.storage.results import Row, RunResult

from ..render import ICEFIRE

DPI = 110
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight",
                   metadata={"Software": None})
    return buffer.getvalue()


def _log_if_wide(ax, axis: str, values: Sequence[float]) -> None:
    """Log scale on ``axis`` ("x" or "y") when the positive values span more than a factor
    of 3; a narrow range reads better (and labels cleanly) on a linear axis."""
    positive = [v for v in values if math.isfinite(v) and v > 0]
    if positive and max(positive) > 3 * min(positive):
        getattr(ax, f"set_{axis}scale")("log")


def _color(optimizer: str) -> str:
    return optimizer_hex(optimizer)


def _linestyle(schedule: str, rows: Sequence[Row]) -> str | tuple:
    """One line style per schedule, the same in every figure of a report."""
    names = sorted({r.schedule for r in rows})
    return LINESTYLES[names.index(schedule) % len(LINESTYLES)]


def label(row: Row, presets: int) -> str:
    """``muon · linear`` (with the preset and epochs when the report holds several)."""
    text = f"{row.optimizer} · {row.schedule}"
    return f"{row.preset} · {text} · {row.epochs} ep" if presets > 1 else text


def best_per_optimizer(rows: Sequence[Row]) -> list[Row]:
    """Each (preset, optimizer)'s row with the lowest mean final loss."""
    best: dict[tuple[str, str], Row] = {}
    for row in rows:
        key = (row.preset, row.optimizer)
        if key not in best or row.best.mean < best[key].best.mean:
            best[key] = row
    return list(best.values())


def lr_sweep(rows: Sequence[Row], presets: int = 1) -> bytes | None:
    """Final loss against peak lr per optimizer × schedule, best weight decay at each lr,
    seed std as error bars (the paper's Fig. 2 left)."""
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    for row in rows:
        per_lr: dict[float, tuple[float, float]] = {}
        for stats in row.settings:
            lr = stats.first.lr
            if lr not in per_lr or stats.mean < per_lr[lr][0]:
                per_lr[lr] = (stats.mean, stats.std or 0.0)
        lrs = sorted(per_lr)
        ax.errorbar(lrs, [per_lr[x][0] for x in lrs], yerr=[per_lr[x][1] for x in lrs],
                    marker="o", capsize=3, color=_color(row.optimizer),
                    linestyle=_linestyle(row.schedule, rows), label=label(row, presets))
    _log_if_wide(ax, "y", [s.mean for r in rows for s in r.settings])
    ax.set(xscale="log", xlabel="peak learning rate",
           ylabel="final fixed-noise validation loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(figure)


def loss_vs_time(rows: Sequence[Row], presets: int = 1) -> bytes | None:
    """The seed-mean validation curve of each optimizer's best row against training time
    (the paper's Fig. 2 right)."""
    best = [r for r in best_per_optimizer(rows) if len(r.curve) > 0]
    if not best:
        return None
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    minutes = max(p.train_s for r in best for p in r.curve) > 600
    for row in best:
        curve = row.curve
        x = [p.train_s / (60 if minutes else 1) for p in curve]
        ax.plot(x, [p.loss for p in curve], color=_color(row.optimizer),
                label=f"{label(row, presets)} ({row.best.label()})")
    _log_if_wide(ax, "y", [p.loss for r in best for p in r.curve])
    ax.set(xlabel=f"training time ({'min' if minutes else 's'})",
           ylabel="fixed-noise validation loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(figure)


def schedules(rows: Sequence[Row], presets: int = 1) -> bytes | None:
    """Validation curves against epoch, one panel per optimizer, one line per schedule
    (each schedule's best setting)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.curve:
            groups.setdefault((row.preset, row.optimizer), []).append(row)
    if not groups:
        return None
    figure = Figure(figsize=(4.0 * min(len(groups), 3), 3.4 * math.ceil(len(groups) / 3)))
    for index, ((preset, optimizer), members) in enumerate(groups.items()):
        ax = figure.add_subplot(math.ceil(len(groups) / 3), min(len(groups), 3), index + 1)
        for row in members:
            curve = row.curve
            ax.plot([p.epoch + 1 for p in curve], [p.loss for p in curve],
                    linestyle=_linestyle(row.schedule, rows),
                    color=_color(optimizer), label=f"{row.schedule} ({row.epochs} ep)")
        _log_if_wide(ax, "y", [p.loss for r in members for p in r.curve])
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", title=optimizer if presets < 2
               else f"{preset} · {optimizer}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    figure.axes[0].set_ylabel("fixed-noise validation loss")
    figure.tight_layout()
    return _png(figure)


def loss_by_t(rows: Sequence[Row], presets: int = 1) -> bytes | None:
    """Final fixed-noise loss per t-bin of each optimizer's best row (seed mean, std error
    bars), log-y: where optimizers differ near t = 1, which the mean over t hides. One x
    axis: rows measured on other bin edges than the first are left to the report's table."""
    lines = [(row, binned) for row in best_per_optimizer(rows)
             if (binned := row.binned) is not None]
    if not lines:
        return None
    edges = lines[0][1].edges
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    x = np.arange(len(edges) - 1)
    for row, binned in lines:
        if binned.edges == edges:
            ax.errorbar(x, binned.mean, yerr=binned.std, marker="o", capsize=3,
                        color=_color(row.optimizer), linestyle=_linestyle(row.schedule, rows),
                        label=f"{label(row, presets)} ({binned.seeds} seed"
                              f"{'s' if binned.seeds > 1 else ''})")
    ax.set_xticks(x, [f"{low:g}–{high:g}" for low, high in itertools.pairwise(edges)],
                  fontsize=8, rotation=30)
    ax.set(yscale="log", xlabel="diffusion time t (bin)",
           ylabel="final fixed-noise validation loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(figure)


def sample_grid(samples: Sequence[tuple[str, np.ndarray]], snapshots: int = 5,
                trajectories: int = 2) -> bytes | None:
    """Vorticity (``(n, states, H, W)`` per label): ``trajectories`` rows of ``snapshots``
    evenly spaced states each, per label, on the diverging map of the terminal previews."""
    samples = [(name, a) for name, a in samples if a.ndim == 4 and a.shape[0] > 0]
    if not samples:
        return None
    cmap = LinearSegmentedColormap.from_list(
        "icefire", [(p, (r / 255, g / 255, b / 255)) for p, r, g, b in ICEFIRE])
    lines = [(name, array[i]) for name, array in samples
             for i in range(min(trajectories, array.shape[0]))]
    columns = max(min(snapshots, a.shape[0]) for _, a in lines)
    figure = Figure(figsize=(1.3 * columns + 1.2, 1.3 * len(lines)))
    grid = figure.add_gridspec(len(lines), columns, wspace=0.04, hspace=0.08)
    for i, (name, states) in enumerate(lines):
        picks = np.linspace(0, states.shape[0] - 1, min(snapshots, states.shape[0]))
        for j, k in enumerate(np.round(picks).astype(int)):
            ax = figure.add_subplot(grid[i, j])
            ax.imshow(display_vorticity(states[k]), cmap=cmap, vmin=-1, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
            if i == 0:
                ax.set_title(f"state {k}", fontsize=7)
    return _png(figure)


def spectra(rows: Sequence[Row], presets: int = 1) -> bytes | None:
    """Energy spectra E(k) of generated samples against the data's (from the quality
    scores stored with the runs), for each optimizer's best row."""
    lines = []
    for row in best_per_optimizer(rows):
        spectrum = next((r.quality["spectrum"] for r in row.best.runs
                         if r.quality and isinstance(r.quality.get("spectrum"), dict)), None)
        if spectrum and spectrum.get("k"):
            lines.append((row, spectrum))
    if not lines:
        return None
    figure = Figure(figsize=(6.4, 4.2))
    ax = figure.add_subplot()
    first = lines[0][1]
    ax.plot(first["k"], first["data"], color="black", linewidth=2, label="data")
    for row, spectrum in lines:
        ax.plot(spectrum["k"], spectrum["generated"], color=_color(row.optimizer),
                label=label(row, presets))
    ax.set(xscale="log", yscale="log", xlabel="wavenumber k", ylabel="energy E(k)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(figure)


def quality_vs_loss(runs: Sequence[RunResult]) -> bytes | None:
    """Every measured run: final loss against each sample-quality score."""
    measured = [r for r in runs if r.quality and r.final_loss is not None
                and math.isfinite(r.final_loss)]
    if not measured:
        return None
    figure = Figure(figsize=(12.0, 6.4))
    for index, score in enumerate(s for s in QUALITY_SCORES if s.label):
        key = score.key
        ax = figure.add_subplot(2, 3, index + 1)
        for optimizer in dict.fromkeys(r.optimizer for r in measured):
            points = [(r.final_loss, r.quality[key]) for r in measured
                      if r.optimizer == optimizer and isinstance(r.quality.get(key), int | float)
                      and math.isfinite(r.quality[key])]  # NaN: not measured, not a point
            if points:
                x, y = zip(*points, strict=True)
                ax.scatter(x, y, color=_color(optimizer), label=optimizer, s=18)
        if not ax.collections:
            ax.text(0.5, 0.5, "not measured", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
        _log_if_wide(ax, "x", [r.final_loss for r in measured])
        ax.set(xlabel="final fixed-noise validation loss",
               ylabel=score.label)
        ax.grid(alpha=0.3, which="both")
    figure.axes[0].legend(fontsize=7)
    figure.tight_layout()
    return _png(figure)
