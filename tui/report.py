"""`diffbench report`: the study's answer in one command. Reads finished runs from the job
database (`storage.results`), prints the main table, and writes ``report.md``, a
self-contained ``report.html`` and ``figures/*.png`` (matplotlib, `tui.figures`).

Filters (``--filter``, repeatable): ``key:value`` with keys preset, opt (or optimizer),
schedule, tag and status; ``opt:adamw,muon`` or a repeated key means either, different
keys must all hold. Bad input (a filter it cannot read, an output folder it cannot write)
exits 2 with one line before anything is written.

`write_report` is the library entry point (``diffbench demo`` calls it too). This module
stays light at import: storage, NumPy and matplotlib load inside the functions.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from diffbench.engine.vocabulary import OPTIMIZERS, SCHEDULES

from .errors import UserError, require, user_errors
from .output import database

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table as RichTable

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


def check_filters(terms: Sequence[str]) -> RunFilter:
    """The filter, or `UserError` naming the bad term (unknown key, status, optimizer or
    schedule)."""
    from diffbench.storage.filters import FilterError, RunFilter

    try:
        run_filter = RunFilter.parse(terms)
    except FilterError as error:
        raise UserError(str(error)) from None
    for attribute, known in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
        for value in sorted(run_filter.terms.get(attribute, ())):
            require(value in known, f"--filter: unknown {attribute} {value!r}; known: "
                    f"{', '.join(known)}")
    return run_filter


def check_out(out: Path) -> None:
    """`UserError` unless ``out`` is (or can be made as) a writable folder."""
    require(not out.exists() or out.is_dir(), f"--out {out} exists and is not a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    require(existing.is_dir() and os.access(existing, os.W_OK | os.X_OK),
            f"--out {out}: cannot write in {existing}")
    figures = out / FIGURES
    require(not figures.exists() or figures.is_dir(), f"{figures} exists and is not a folder")


# ----------------------------------------------------------------------------- command


def report(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Folder for report.md, report.html and "
        "figures/. Default: <home>/report.", show_default=False)] = None,
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", "-f", metavar="KEY:VALUE", help="Only these runs: preset:, opt:, "
        "schedule:, tag:, status: (repeatable; a,b = either).", show_default=False)] = None,
) -> None:
    """Compare optimizers and schedules: the best setting of each, mean ± std over seeds,
    % against AdamW, step-time ratio, time to AdamW's loss, sample quality, the paper's
    figures beside ours.

    [bold]Examples[/]

      diffbench report
      diffbench report --out results/ --filter preset:tiny --filter opt:adamw,muon
    """
    terms = list(filters or ())
    target = out if out is not None else ctx.find_root().obj.root / "report"
    with user_errors():
        check_filters(terms)
        check_out(target)
    with database(ctx) as db:
        try:
            write_report(db, target, filters=terms)
        except NoRuns as message:
            typer.echo(str(message), err=True)


def write_report(db: Database, out: Path, *, filters: Sequence[str] = (),
                 console: Console | None = None) -> Path:
    """Build everything, print the main table on ``console`` (stdout by default), write
    ``out``/report.md, report.html and figures/*.png; the Markdown file's path.

    Raises `UserError` for a bad filter or an unwritable ``out``, `NoRuns` when no run
    matches.
    """
    from diffbench.storage import results

    from . import document
    from .output import console as stdout_console

    run_filter = check_filters(filters)
    check_out(out)
    runs = results.load_runs(db, run_filter)
    if not runs:
        raise NoRuns(_next_steps(db, run_filter))
    rows = results.summarize(runs)
    caveats = results.caveats(runs, rows)
    drawn = _figures(db, runs, rows)
    blocks = _document(db, run_filter, runs, rows, caveats, drawn)
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
    _print(console, rows, caveats)
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


# ----------------------------------------------------------------------------- numbers


def fmt_loss(mean: float, std: float | None) -> str:
    return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"


def fmt_pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f} %".replace("-", "−")


def fmt_ratio(row: Row) -> str:
    if row.baseline is None:
        return "—"
    if row.baseline == row.best:
        return "baseline"
    return "other device" if row.step_ratio is None else f"{row.step_ratio:.2f}×"


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


#: Columns of the quality table: score key, header, format.
QUALITY_COLUMNS = (("std_ratio", "std ×", ".3g"), ("mean_flow", "mean flow", ".2g"),
                   ("spectrum_error", "spectrum", ".3g"), ("vorticity_w1", "W1", ".3g"),
                   ("divergence_ratio", "div ×", ".3g"), ("dynamics_error", "dynamics ×", ".3g"),
                   ("unstable_fraction", "unstable", ".0%"),
                   ("lag1_autocorrelation", "lag-1 corr", ".3f"),
                   ("sin4y_amplitude", "sin 4y", ".3g"))


def quality_table(rows: Sequence[Row]) -> tuple[tuple[str, ...], list[tuple[str, ...]], int]:
    """Columns, cells and leading text columns of the sample-quality table: each measured
    row's mean scores, whether they are like data, then the data-vs-data floor of each
    preset (the validation split scored against the test split at the samples' size)."""
    from diffbench.storage.sample_quality import unlike_data

    lead = _lead(rows)
    columns = (*lead, "optimizer", "schedule", "best setting", "seeds",
               *(header for _, header, _ in QUALITY_COLUMNS), "like data")

    def values(scores: dict[str, float]) -> tuple[str, ...]:
        return tuple(format(scores[key], spec) if key in scores else "—"
                     for key, _, spec in QUALITY_COLUMNS)

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
    from .output import t_bin

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
                     "runs on the same device only; training times are not comparable.")
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


def _print(console: Console, rows: Sequence[Row], caveats: Caveats) -> None:
    columns, cells, left = main_table(rows)
    console.print(_rich_table("Best setting per optimizer × schedule (final fixed-noise "
                              "validation loss)", columns, cells,
                              range(left, len(columns) - 1)))
    for line in caveat_lines(caveats, rows):
        console.print(f"• {line}", markup=False, highlight=False)
    columns, cells, left = bins_table(rows)
    if cells:
        console.print(_rich_table("Final fixed-noise loss by noise level (t-bin), best "
                                  "settings", columns, cells, range(left, len(columns))))
    columns, cells, left = quality_table(rows)
    if cells:
        console.print(_rich_table("Sample quality, best settings (docs/QUALITY.md)", columns,
                                  cells, range(left, len(columns) - 1)))
        for line in _sampler_lines([r for r in rows if r.quality]):
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
              "only (the paper's Fig. 2 right).", figures.loss_vs_time(rows, presets), none),
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
    blocks += [Paragraph(line) for line in _sampler_lines(measured)]
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


def _sampler_lines(rows: Sequence[Row]) -> list[str]:
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
              rows: Sequence[Row], caveats: Caveats, drawn: Sequence[Drawn]) -> list[Block]:
    from .document import Bullets, Heading, Image, Paragraph, Table

    columns, cells, left = main_table(rows)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[Block] = [
        Heading(TITLE, 1),
        Paragraph(f"{stamp} · database `{db.url}` · "
                  + (f"filter `{run_filter}`" if run_filter.terms else "all runs")),
        Heading("Caveats"), Bullets(tuple(caveat_lines(caveats, rows))),
        Heading("Best setting per optimizer × schedule"),
        Paragraph("Final loss: the last fixed-noise validation loss (the same noise and "
                  "windows for every run), mean ± std over seeds of the setting with the "
                  "lowest mean. vs AdamW: against AdamW with linear decay of the same preset "
                  "and epochs. Step time: ms per step over AdamW's, same device only. Time to "
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
