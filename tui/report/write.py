"""`write_report`: finished runs out of the job database (`storage.results`) into the
terminal table, ``report.md``, a self-contained ``report.html`` and ``figures/*.png``
(matplotlib, `figures.py`). `diffbench report` and `diffbench demo` call it. Storage,
NumPy and matplotlib load inside the functions, so importing it stays light.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import require, require_writable
from .tables import (
    bins_table,
    calibration_table,
    caveat_lines,
    fmt_loss,
    fmt_pct,
    main_table,
    quality_table,
    sampler_lines,
    step_lines,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table as RichTable

    from diffbench.storage.calibration import Calibration
    from diffbench.storage.db import Database
    from diffbench.storage.filters import RunFilter
    from diffbench.storage.results import Caveats, Row, RunResult

    from .document import Block


MARKDOWN, HTML, FIGURES = "report.md", "report.html", "figures"
TITLE = "diffbench report"


class NoRuns(Exception):
    """Nothing to report; the message says what to do next."""


@dataclass(frozen=True)
class Drawn:
    """A figure: file stem, heading, caption, PNG bytes (None: not drawn, ``missing`` says
    why)."""

    name: str
    title: str
    caption: str
    png: bytes | None
    missing: str = ""


# ----------------------------------------------------------------------------- input


def check_out(out: Path) -> None:
    """`UserError` unless ``out`` is (or can be made as) a writable folder."""
    require(not out.exists() or out.is_dir(), f"--out {out} exists and is not a folder")
    require_writable(out, f"--out {out}")
    figures = out / FIGURES
    require(not figures.exists() or figures.is_dir(), f"{figures} exists and is not a folder")


def write_report(db: Database, out: Path, *, filters: Sequence[str] = (),
                 console: Console | None = None) -> Path:
    """Build everything, print the main table on ``console`` (stdout by default), write
    ``out``/report.md, report.html and figures/*.png; the Markdown file's path.

    Raises `UserError` for a bad filter or an unwritable ``out``, `NoRuns` when no run
    matches.
    """
    from diffbench.storage import calibration, results

    from ..output import console as stdout_console
    from ..output import run_filter as parse_filters
    from . import document

    run_filter = parse_filters(filters)
    check_out(out)
    runs = results.load_runs(db, run_filter)
    if not runs:
        raise NoRuns(_next_steps(db, run_filter))
    calibrated = calibration.calibrations(db)
    rows = results.summarize(runs, calibration.latest(calibrated))
    caveats = results.caveats(runs, rows)
    drawn = _figures(db, runs, rows)
    steps = step_lines(rows, runs, calibrated)
    blocks = _document(db, run_filter, runs, rows, caveats, drawn, steps, calibrated)
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    for figure in drawn:  # a figure not drawn this time leaves no stale file behind
        path = out / FIGURES / f"{figure.name}.png"
        if figure.png is not None:
            path.write_bytes(figure.png)
        else:
            path.unlink(missing_ok=True)
    markdown = out / MARKDOWN
    markdown.write_text(document.to_markdown(blocks))
    (out / HTML).write_text(document.to_html(blocks, TITLE))
    console = console or stdout_console()
    _print(console, rows, caveats, steps)
    console.print(f"report: {markdown} and {out / HTML} ({sum(f.png is not None for f in drawn)}"
                  f" figures in {out / FIGURES})", markup=False, highlight=False)
    return markdown


def _next_steps(db: Database, run_filter: RunFilter) -> str:
    from diffbench.storage.queue import count_by_status

    total = sum(count_by_status(db).values())
    if total:
        return (f"no runs match {run_filter} ({total} runs in the database); "
                "see `diffbench runs ls`, or drop the filter")
    return ("no runs in the database yet. To make some and report on them:\n"
            "  diffbench data generate --preset tiny\n"
            "  diffbench queue add -p tiny -O adamw,muon --seeds 0-1\n"
            "  diffbench worker --idle-exit 5\n"
            "  diffbench report\n"
            "or run `diffbench demo`, which does all of it.")


def _rich_table(title: str, columns: Sequence[str], cells: Sequence[Sequence[str]],
                right: range) -> RichTable:
    """A terminal table; the columns in ``right`` (numbers) right-aligned."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for index, name in enumerate(columns):
        table.add_column(name, justify="right" if index in right else "left")
    for line in cells:
        table.add_row(*map(escape, line))
    return table


def _print(console: Console, rows: Sequence[Row], caveats: Caveats,
           steps: Sequence[str]) -> None:
    columns, cells, left = main_table(rows)
    console.print(_rich_table("Best setting per optimizer × schedule (final fixed-noise "
                              "validation loss)", columns, cells,
                              range(left, len(columns) - 1)))
    for line in (*caveat_lines(caveats, rows), *steps):
        console.print(f"• {line}", markup=False, highlight=False)
    columns, cells, left = bins_table(rows)
    if cells:
        console.print(_rich_table("Final fixed-noise loss by noise level (t-bin), best "
                                  "settings", columns, cells, range(left, len(columns))))
    columns, cells, left = quality_table(rows)
    if cells:
        console.print(_rich_table("Sample quality, best settings (docs/QUALITY.md)", columns,
                                  cells, range(left, len(columns) - 1)))
        for line in sampler_lines([r for r in rows if r.quality]):
            console.print(line, markup=False, highlight=False)


# ----------------------------------------------------------------------------- figures


def _samples(db: Database, rows: Sequence[Row]) -> list[tuple[str, object]]:
    """Vorticity of each optimizer's best run: the states its quality phase scored (else its
    newest preview), then the test data they were scored against."""
    from diffbench.storage.records import get_sample
    from diffbench.storage.results import last_sample_ids

    from .figures import best_per_optimizer

    runs = [(row, min(row.best.runs, key=lambda r: r.final_loss))
            for row in best_per_optimizer(rows)]
    ids = [r.id for _, r in runs]
    scored, previews = last_sample_ids(db, ids, "quality"), last_sample_ids(db, ids)
    out: list[tuple[str, object]] = []
    for row, run in runs:
        sample = scored.get(run.id, previews.get(run.id))
        if sample is not None:
            out.append((f"{row.optimizer}\n{row.schedule}", get_sample(db, sample).array()))
    data = last_sample_ids(db, ids, "quality-data")
    if data:
        out.append(("data\n(test)", get_sample(db, next(iter(data.values()))).array()))
    return out


def _figures(db: Database, runs: Sequence[RunResult], rows: Sequence[Row]) -> list[Drawn]:
    from . import figures

    presets = len({r.preset for r in rows})
    none = "no finished runs"
    quality = "sample quality not measured for any run here"
    return [
        Drawn("lr_sweep", "Final loss against learning rate",
              "Best weight decay at each lr; error bars: std over seeds (the paper's Fig. 2 "
              "left).", figures.lr_sweep(rows, presets) if rows else None, none),
        Drawn("loss_vs_time", "Validation loss against training time",
              "Each optimizer's best setting, mean over seeds; training time counts steps "
              "only (the paper's Fig. 2 right)" + ("; steps × the calibrated ms/step where a "
              "calibration of the run's device and preset exists (see the caveats)."
              if any(r.timed_by == "calibration" for r in runs) else "."),
              figures.loss_vs_time(rows, presets), none),
        Drawn("schedules", "Loss curves by schedule",
              "Each schedule's best setting, mean over seeds.",
              figures.schedules(rows, presets), none),
        Drawn("loss_by_t", "Final loss by noise level",
              "Final fixed-noise loss in each diffusion-time bin of each optimizer's best "
              "setting, mean over seeds (error bars: std); the same windows and noise in "
              "every bin and run. Near t = 1 the sampler amplifies ε̂'s error most.",
              figures.loss_by_t(rows, presets),
              "no run here measured its loss by noise level (runs from before it was)"),
        Drawn("samples", "Vorticity samples",
              "Two generated trajectories × five states of each optimizer's best run: those "
              "its sample-quality scores were computed on (runs from before: the newest "
              "preview window), the same noise for every run; the test data beneath.",
              figures.sample_grid(_samples(db, rows)), "no stored samples"),
        Drawn("spectra", "Energy spectra of samples against the data",
              "Each optimizer's best setting.", figures.spectra(rows, presets), quality),
        Drawn("quality_vs_loss", "Loss against sample quality",
              "Every measured run; lower is better on both axes.",
              figures.quality_vs_loss(runs), quality),
    ]


# ----------------------------------------------------------------------------- document


def _quality_blocks(rows: Sequence[Row]) -> list[Block]:
    from diffbench.storage.sample_quality import FLOOR_FACTOR, STD_TOLERANCE, unlike_data

    from .document import Paragraph, Table

    measured = [r for r in rows if r.quality]
    if not measured:
        return [Paragraph("Not measured: no run in this report has sample-quality scores "
                          "(runs that finished before scoring existed, or scoring was "
                          "skipped).")]
    columns, cells, left = quality_table(rows)
    blocks: list[Block] = [
        Paragraph("Means over the best setting's measured seeds (docs/QUALITY.md). Velocity "
                  "std and mean flow in units of the data's std; spectrum: RMS log ratio of "
                  "the energy spectra; W1: vorticity distance in data stds; div ×, "
                  "dynamics ×: over the data's own; unstable: pairs the solver cannot "
                  "advance. Like data: std within "
                  f"{STD_TOLERANCE:g}× the data's, spectrum and W1 within {FLOOR_FACTOR:g}× "
                  "the data-vs-data floor, dynamics finite."),
        Table(columns, tuple(cells), left=left)]
    blocks += [Paragraph(line) for line in sampler_lines(measured)]
    best = min(r.best.mean for r in measured)
    for row in measured:
        reasons = unlike_data(row.quality, row.floor)
        if reasons:
            ratio = row.best.mean / best
            blocks.append(Paragraph(
                f"Not like data: {row.optimizer} · {row.schedule} ({row.best.label()}): "
                f"{'; '.join(reasons)}. Its final loss is {row.best.mean:.4g}, "
                + (f"{ratio:.1f}× the best row's: not converged as far in this preset's "
                   "steps, and the sampler amplifies what is left near t = 1 (see the loss "
                   "by noise level)." if ratio > 1.25 else "close to the best row's: a "
                   "loss that does not tell sample quality.")))
    legacy = [f"{r.optimizer} · {r.schedule}" for r in measured if r.sampler is None
              and not r.floor]
    if legacy:
        blocks.append(Paragraph(
            f"Scored before the sampler settings were recorded: {', '.join(legacy)}; only "
            "their vorticity W1 and divergence ratio share today's definitions."))
    missing = [f"{r.optimizer} · {r.schedule}" for r in rows if not r.quality]
    if missing:
        blocks.append(Paragraph(f"Not measured: {', '.join(missing)}."))
    return blocks


def _bins_blocks(rows: Sequence[Row]) -> list[Block]:
    from .document import Paragraph, Table

    columns, cells, left = bins_table(rows)
    if not cells:
        return [Paragraph("Not measured: no run in this report recorded its fixed-noise loss "
                          "by noise level (runs that finished before diffbench measured it).")]
    blocks: list[Block] = [
        Paragraph("The final fixed-noise validation loss in each bin of diffusion time t "
                  "(`t0.90-0.95`: t from 0.90 to 0.95), mean ± std over the best setting's "
                  "seeds; the same windows and noise in every bin and run. The sampler "
                  "multiplies ε̂'s error by σ/μ (29 at t = 0.9, 1000 at t = 1), so the bins "
                  "near t = 1 weigh most on samples (docs/QUALITY.md)."),
        Table(columns, tuple(cells), left=left)]
    missing = [f"{r.optimizer} · {r.schedule}" for r in rows if r.binned is None]
    if missing:
        blocks.append(Paragraph(f"No per-bin losses (runs from before they were measured): "
                                f"{', '.join(missing)}."))
    return blocks


def _step_blocks(calibrated: Sequence[Calibration]) -> list[Block]:
    from .document import Paragraph, Table

    if not calibrated:
        return [Paragraph("No calibration stored: step-time ratios and training times are "
                          "the runs' own, which other runs on the same machine may have slowed. "
                          "`diffbench calibrate -p PRESET` times each optimizer side by side.")]
    columns, cells, left = calibration_table(calibrated)
    return [Paragraph("Every stored calibration (`diffbench calibrate`): each optimizer's full "
                      "step (data + forward/backward + optimizer) timed side by side in "
                      "interleaved rounds after a warm-up; ms/step: mean ± std over rounds; "
                      "× AdamW: ratio of means, in brackets the rounds' range. The newest per "
                      "device and preset is used."), Table(columns, tuple(cells), left=left)]


def _paper_blocks(rows: Sequence[Row]) -> list[Block]:
    from diffbench.storage.published import PAPER_PRESET, compare_published, load_published

    from .document import Paragraph, Table

    stats = [s for r in rows if r.preset == PAPER_PRESET for s in r.settings]
    if not stats:
        return [Paragraph(f"No finished runs on the `{PAPER_PRESET}` preset match, so there "
                          "is nothing to set beside the paper's numbers (queue the "
                          "`paper-best` sweep to make some).")]
    published, source = load_published()
    compared = compare_published(stats, published)
    lines = tuple((c.published.figure, c.published.series, c.published.key,
                   f"{c.published.value:g}", "—" if c.ours is None else f"{c.ours:.4g}",
                   "—" if c.ours is None else fmt_pct(100 * (c.ours / c.published.value - 1)),
                   str(c.seeds), c.setting or "no matching runs") for c in compared)
    return [Paragraph(f"Source: {source}"),
            Paragraph("The paper's losses are its validation losses read off its plots; "
                      "diffbench's are fixed-noise validation losses; times are on other "
                      "hardware."),
            Table(("figure", "series", "key", "paper", "diffbench", "Δ", "seeds", "setting"),
                  lines, left=3)]


def _document(db: Database, run_filter: RunFilter, runs: Sequence[RunResult],
              rows: Sequence[Row], caveats: Caveats, drawn: Sequence[Drawn],
              steps: Sequence[str], calibrated: Sequence[Calibration]) -> list[Block]:
    from .document import Bullets, Heading, Image, Paragraph, Table

    columns, cells, left = main_table(rows)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(TITLE, 1),
        Paragraph(f"{stamp} · database `{db.url}` · "
                  + (f"filter `{run_filter}`" if run_filter.terms else "all runs")),
        Heading("Caveats"), Bullets((*caveat_lines(caveats, rows), *steps)),
        Heading("Best setting per optimizer × schedule"),
        Paragraph("Final loss: the last fixed-noise validation loss (the same noise and "
                  "windows for every run), mean ± std over seeds of the setting with the "
                  "lowest mean. vs AdamW: against AdamW with linear decay of the same preset "
                  "and epochs. Step time: ms per step over AdamW's, same device and preset "
                  "only (cal.: from a calibration; see the caveats and Step time). Time to "
                  "AdamW's loss: training time (steps only) at which the seed-mean curve first "
                  "reaches AdamW's mean final loss."),
        Table(columns, tuple(cells), left=left),
        Heading("Figures"),
    ]
    for figure in drawn:
        blocks.append(Heading(figure.title, 3))
        if figure.png is None:
            blocks.append(Paragraph(f"Not drawn: {figure.missing}."))
        else:
            blocks += [Image(f"{FIGURES}/{figure.name}.png", figure.title, figure.png),
                       Paragraph(figure.caption)]
    blocks += [Heading("Step time"), *_step_blocks(calibrated)]
    blocks += [Heading("Loss by noise level"), *_bins_blocks(rows)]
    blocks += [Heading("Sample quality"), *_quality_blocks(rows),
               Heading("The paper beside diffbench"), *_paper_blocks(rows),
               Heading("Every setting"),
               Table(("preset", "optimizer", "schedule", "epochs", "setting", "seeds",
                      "final loss", "runs"),
                     tuple((r.preset, r.optimizer, r.schedule, str(r.epochs), s.label(),
                            str(s.seeds), fmt_loss(s.mean, s.std),
                            ",".join(str(x.id) for x in s.runs))
                           for r in rows for s in r.settings), left=5)]
    return blocks
