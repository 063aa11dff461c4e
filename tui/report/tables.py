"""The report's numbers as table cells, shared by the terminal and the files: the main
table, the loss by noise level, sample quality, the sampler line, the caveats, and where
step times and training times come from (calibrations or the runs' own)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from diffbench.engine.vocabulary import QUALITY_SCORES

if TYPE_CHECKING:
    from diffbench.storage.calibration import Calibration
    from diffbench.storage.results import Caveats, Row, RunResult



def fmt_loss(mean: float, std: float | None) -> str:
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f} %".replace("-", "−")


def fmt_ratio(row: Row) -> str:
    if row.baseline is None:
        return "—"
    if row.baseline == row.best:
        return "baseline"
    return "—" if row.step is None else row.step.text()


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if math.isinf(seconds):
        return "∞ (never)"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.2f} h"


def fmt_quality(row: Row) -> str:
    """The main table's summary: std ratio, spectrum and W1 (× their floor), dynamics."""
    if not row.quality:
        return "not measured"
    parts = []
    if "std_ratio" in row.quality:
        parts.append(f"std {row.quality['std_ratio']:.2f}×")
    for key, short in (("spectrum_error", "spec"), ("vorticity_w1", "W1")):
        if key in row.quality:
            floor = row.floor.get(key)
            parts.append(f"{short} {row.quality[key]:.3g}"
                         + (f" ({row.quality[key] / floor:.1f}× floor)" if floor else ""))
    if "dynamics_error" in row.quality:
        parts.append(f"dyn {row.quality['dynamics_error']:.3g}")
    return " · ".join(parts)


def quality_table(rows: Sequence[Row]) -> tuple[tuple[str, ...], list[tuple[str, ...]], int]:
    """Columns, cells and leading text columns of the sample-quality table: each measured
    row's mean scores, whether they are like data, then the data-vs-data floor of each
    preset (the validation split scored against the test split at the samples' size)."""
    from diffbench.storage.sample_quality import unlike_data

    lead = _lead(rows)
    columns = (*lead, "optimizer", "schedule", "best setting", "seeds",
               *(score.header for score in QUALITY_SCORES), "like data")

    def values(scores: dict[str, float]) -> tuple[str, ...]:
        return tuple(format(scores[s.key], s.format) if s.key in scores else "—"
                     for s in QUALITY_SCORES)

    cells = [(*_lead_cells(r, lead), r.optimizer, r.schedule, r.best.label(),
              str(r.quality_seeds), *values(r.quality),
              ("no" if unlike_data(r.quality, r.floor) else "yes") if r.floor else "—")
             for r in rows if r.quality]
    floors: dict[tuple[str, ...], dict[str, float]] = {}
    for r in rows:
        if r.floor:
            floors.setdefault(_lead_cells(r, lead), r.floor)
    for lead_cells, floor in floors.items():
        cells.append((*lead_cells, "data vs data", "(floor)", "", "",
                      *values(floor), ""))
    return columns, cells, len(lead) + 4


def _lead(rows: Sequence[Row]) -> list[str]:
    """The preset and epochs columns a table needs: only those its rows differ in."""
    return [name for name, values in (("preset", {r.preset for r in rows}),
                                      ("epochs", {r.epochs for r in rows})) if len(values) > 1]


def _lead_cells(row: Row, lead: Sequence[str]) -> tuple[str, ...]:
    values = {"preset": row.preset, "epochs": str(row.epochs)}
    return tuple(values[c] for c in lead)


def main_table(rows: Sequence[Row]) -> tuple[tuple[str, ...], list[tuple[str, ...]], int]:
    """Columns, cells and the number of leading text columns of the main table (shared by
    the terminal and the files); preset and epochs columns only when rows differ in them."""
    lead = _lead(rows)
    columns = (*lead, "optimizer", "schedule", "best setting", "seeds", "final loss",
               "vs AdamW", "step time", "time to AdamW's loss", "sample quality")
    cells = []
    for row in rows:
        cells.append((*_lead_cells(row, lead), row.optimizer, row.schedule,
                      row.best.label(), str(row.best.seeds),
                      fmt_loss(row.best.mean, row.best.std),
                      "baseline" if row.baseline == row.best else fmt_pct(row.vs_baseline_pct),
                      fmt_ratio(row), fmt_duration(row.time_to_target_s), fmt_quality(row)))
    return columns, cells, len(lead) + 3


def bins_table(rows: Sequence[Row]) -> tuple[tuple[str, ...], list[tuple[str, ...]], int]:
    """Columns, cells and leading text columns of the loss-by-noise-level table: for each
    row whose runs measured it, the best setting's final fixed-noise loss per t-bin, mean ±
    std over seeds; bins named by their edges as in `runs export` (no cells: none measured)."""
    from ..output import t_bin

    lead = _lead(rows)
    per_row = []
    for row in rows:
        binned = row.binned
        if binned is not None:
            stds = binned.std or (None,) * len(binned.mean)
            per_row.append((row, binned.seeds, {
                t_bin(low, high): fmt_loss(mean, std) for (low, high), mean, std
                in zip(itertools.pairwise(binned.edges), binned.mean, stds, strict=True)}))
    names = list(dict.fromkeys(name for *_, losses in per_row for name in losses))
    cells = [(*_lead_cells(row, lead), row.optimizer, row.schedule, row.best.label(),
              str(seeds), *(losses.get(name, "—") for name in names))
             for row, seeds, losses in per_row]
    return (*lead, "optimizer", "schedule", "best setting", "seeds", *names), cells, \
        len(lead) + 3


def caveat_lines(caveats: Caveats, rows: Sequence[Row]) -> list[str]:
    """What a reader must know before trusting the table, as sentences."""
    from diffbench.storage.results import short
    from diffbench.storage.states import Status

    lines = []
    low, high = caveats.seeds
    if high == 0:
        lines.append("No finished runs yet: the table is empty.")
    elif high == 1:
        lines.append("One seed per setting: no error bars, and differences may be noise.")
    else:
        lines.append(f"Seeds per best setting: {low}" + (f" to {high}" if high != low else "")
                     + "; ± is the sample standard deviation over seeds"
                     + (" (none for a single seed)." if low == 1 else "."))
    if len(caveats.devices) > 1:
        lines.append(f"Devices mixed ({', '.join(caveats.devices)}): step-time ratios compare "
                     "runs on the same device and preset only; training times are not "
                     "comparable.")
    elif caveats.devices:
        lines.append(f"All finished runs ran on one device: {caveats.devices[0]}.")
    if caveats.unknown_device:
        lines.append(f"{caveats.unknown_device} finished runs recorded no device.")
    order = [Status.DONE, *(s for s in Status if s != Status.DONE)]
    counts = ", ".join(f"{caveats.statuses[s.value]} {s.value}" for s in order
                       if s.value in caveats.statuses)
    lines.append(f"Runs: {counts}; only done runs are aggregated.")
    for run in caveats.not_done[:12]:
        reason = f": {run.error}" if run.error and run.status != "cancelled" else ""
        lines.append(f"Run {run.id} ({run.optimizer} · {run.schedule}, lr {short(run.lr)}, "
                     f"wd {short(run.weight_decay)}, seed {run.seed}) is {run.status}{reason}.")
    if len(caveats.not_done) > 12:
        lines.append(f"… and {len(caveats.not_done) - 12} more not done "
                     "(`diffbench runs ls --status failed,diverged,queued,running`).")
    if len(caveats.presets) > 1:
        lines.append(f"Several presets ({', '.join(caveats.presets)}): each row is compared "
                     "within its own preset.")
    if rows and any(r.baseline is None for r in rows):
        lines.append("No finished AdamW run for some rows: no % against AdamW, step-time "
                     "ratio or time to AdamW's loss there.")
    return lines


def step_lines(rows: Sequence[Row], runs: Sequence[RunResult],
               calibrated: Sequence[Calibration]) -> list[str]:
    """Where the step-time ratios and the training-time axis come from, as sentences."""
    from diffbench.storage.step_ratios import CALIBRATION, SHARED

    lines = []
    used = {r.step.calibration for r in rows if r.step and r.step.calibration}
    for c in calibrated:
        if c.id in used:
            lines.append(f"Step time marked cal.: calibration #{c.id} on {c.device}, preset "
                         f"{c.preset} ({c.created_at:%Y-%m-%d}, host {c.host}): every "
                         f"optimizer's full step timed side by side, {c.rounds} rounds × "
                         f"{c.steps} steps; ratio of means, in brackets the rounds' range.")
    if any(r.step and r.step.source == "runs" for r in rows):
        lines.append("Step time without a calibration: the runs' own mean ms/step on the same "
                     "device and preset, ratio of means, in brackets the range over runs; "
                     "`diffbench calibrate -p PRESET` on that device times each optimizer "
                     "side by side.")
    shared = sorted({r.id for row in rows if row.step and row.step.caveat
                     for s in (row.best, row.baseline) if s for r in s.runs if r.shared})
    if shared:
        lines.append(f"† {SHARED}: runs {', '.join(map(str, shared[:12]))}"
                     + (" …" if len(shared) > 12 else "") + " overlapped in time with another "
                     "run on one host, so their step times include that contention.")
    if any(r.step and r.step.ratio is None for r in rows):
        lines.append("Not comparable: the row and AdamW never trained on the same device and "
                     "preset (and no calibration there times both).")
    done = [r for r in runs if r.curve]
    timed = sum(r.timed_by == CALIBRATION for r in done)
    if timed:
        lines.append(f"Training times (time to AdamW's loss, loss against time): steps × the "
                     f"calibrated ms/step for {timed} of {len(done)} finished runs"
                     + (", the others as measured." if timed < len(done) else "."))
    elif any(r.shared for r in done):
        lines.append(f"Training times are as measured, {SHARED} (no calibration).")
    return lines


def calibration_table(calibrated: Sequence[Calibration]
                      ) -> tuple[tuple[str, ...], list[tuple[str, ...]], int]:
    """Columns, cells and leading text columns of the calibrations' table: per calibration
    and optimizer, the mean ms/step ± std over rounds and the ratio to AdamW."""
    cells = []
    for c in calibrated:
        for t in sorted(c.times, key=lambda t: t.ms_per_step):
            ratio = c.ratio(t.optimizer, "adamw")
            cells.append((f"#{c.id}", c.device, c.preset, t.optimizer,
                          fmt_loss(t.ms_per_step, t.ms_std), f"{c.rounds} × {c.steps}",
                          "—" if ratio is None else ratio.text()))
    return ("calibration", "device", "preset", "optimizer", "ms/step", "rounds × steps",
            "× AdamW"), cells, 4


def sampler_lines(rows: Sequence[Row]) -> list[str]:
    """How the scored samples were made, once per distinct setting."""
    settings: dict[str, list[str]] = {}
    for row in rows:
        if row.sampler is not None:
            settings.setdefault(fmt_sampler(row.sampler), []).append(
                f"{row.optimizer} · {row.schedule}")
    if len(settings) == 1:
        return [f"Sampled with {next(iter(settings))}."]
    return [f"Sampled with {text}: {', '.join(names)}." for text, names in settings.items()]


def fmt_sampler(sampler: dict[str, object]) -> str:
    """``128 steps, 1 correction (τ 0.5), from t = 0.9, exact mean``."""
    corrections = int(sampler.get("corrections", 0))
    text = (f"{sampler.get('steps')} steps, {corrections} correction"
            f"{'' if corrections == 1 else 's'} (τ {sampler.get('tau')}), "
            f"from t = {sampler.get('t_start', 1.0)}")
    return text + (", exact mean" if sampler.get("remove_mean") else "")


