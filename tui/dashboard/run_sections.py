"""The run screen's sections as Rich renderables (no Textual): pure functions of a
`run_details.RunDetails` and the width they get, so tests can read them as text.

Numbers are formatted as the runs table formats them (`runs_pane.number`); quality scores
by their own formats (`engine.vocabulary.QUALITY_SCORES`); pictures by `tui.render`, as
the vorticity pane draws them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from diffbench.engine.vocabulary import QUALITY_SCORES

from ..render import legend, render_row
from .palette import STATUS_COLOR, STATUS_SYMBOL, optimizer_style
from .run_details import FrameImages, RunDetails, events, worker_state
from .runs_pane import duration, number

PREVIEW_KEYS = "←/→ scrub"
#: Config keys of a preset's sections left out: the defaults of *other* runs' optimizers.
SKIPPED_SECTIONS = ("name", "optimizers")


def _grid(*widths: int | None) -> Table:
    table = Table.grid(padding=(0, 2))
    for width in widths:
        table.add_column(justify="right" if width else "left", min_width=width)
    return table


def _pairs(pairs: Iterable[tuple[str, Any]], width: int, indent: int = 0,
           start: int = 0) -> Text:
    """``key value · key value`` wrapped at ``width`` between pairs (the first line begins
    ``start`` columns in, the others ``indent``)."""
    out, line = Text(), start
    for i, (key, value) in enumerate(pairs):
        item = Text.assemble((key, "dim"), " ", _value(value))
        if i and line + 3 + item.cell_len > width:
            out.append("\n" + " " * indent)
            line = indent
        elif i:
            out.append(" · ", "dim")
            line += 3
        out.append_text(item)
        line += item.cell_len
    return out


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return "—"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value)


def when(at: dt.datetime | None) -> str:
    return "" if at is None else f"{at:%Y-%m-%d %H:%M:%S}"


# ----------------------------------------------------------------------------- sections


def header(d: RunDetails) -> Text:
    run = d.run
    status = run.status.value
    out = Text.assemble(("run ", "bold"), (f"#{run.id}", "bold"), "  ",
                        (f"{STATUS_SYMBOL.get(run.status, '?')} {status}",
                         STATUS_COLOR.get(status, "")), "  ",
                        (run.optimizer, optimizer_style(run.optimizer)))
    out.append(f" · {run.schedule} · lr {number(run.lr, 3)} · wd {number(run.weight_decay, 3)}"
               f" · seed {run.seed} · ")
    preset = (run.config or {}).get("preset", {}).get("name") or run.preset
    out.append(f"preset {preset}")
    total = run.epochs or (run.config or {}).get("preset", {}).get("train", {}).get("epochs")
    out.append(f" · {len(d.epochs)}/{total or '?'} epochs · step {run.steps_done}")
    return out


def losses(d: RunDetails, width: int) -> RenderableType:
    if not d.epochs and d.last_loss is None:
        return Text("no losses yet: the first comes with the first steps", style="dim")
    table = _grid(None, 9, 9, None)
    table.add_row(Text("loss", "dim"), Text("last", "dim"), Text("best", "dim"), "")
    last = d.epochs[-1] if d.epochs else None

    def column(name: str) -> tuple[float | None, float | None]:
        values = [getattr(e, name) for e in d.epochs if getattr(e, name) is not None]
        finite = [v for v in values if math.isfinite(v)]
        return (values[-1] if values else None), (min(finite) if finite else None)

    train, _ = column("train_loss")
    table.add_row("train", number(train), "", Text("epoch's mean", "dim"))
    valid, best_valid = column("valid_loss")
    table.add_row("valid", number(valid), number(best_valid), Text("fresh noise", "dim"))
    fixed, best_fixed = column("fixed_valid_loss")
    table.add_row(Text("fixed-noise", "bold"), Text(number(fixed), "bold"), number(best_fixed),
                  Text("same noise every run", "dim"))
    table.add_row("last step", number(d.last_loss), "", "")
    parts: list[RenderableType] = [table, Text(
        "valid draws t, noise and windows afresh; fixed-noise uses the same ones for every "
        "run, so runs compare: the report ranks by it", "dim")]
    if last is not None:
        total = d.run.epochs or "?"
        parts.append(Text(f"after epoch {last.epoch + 1} of {total} (step {last.step})",
                          "dim"))
    bins = next((e.fixed_valid_bins for e in reversed(d.epochs) if e.fixed_valid_bins), None)
    edges = d.run.loss_bins
    if bins and edges and len(edges) == len(bins) + 1:
        parts.append(Text("fixed-noise loss per t-bin (last validation)", "bold"))
        parts.append(_bins(edges, bins, width))
    elif d.epochs:
        parts.append(Text("no per-t-bin losses (a run from before they were measured)", "dim"))
    return Group(*parts)


def _edge(value: float) -> str:
    return f"{value:g}".removeprefix("0") if 0 < value < 1 else f"{value:g}"


def _bins(edges: list[float], bins: Iterable[float], width: int) -> Table:
    cells = [(f"{_edge(a)}–{_edge(b)}", number(v, 4)) for a, b, v in
             zip(edges, edges[1:], bins, strict=False)]
    per_line = max(1, (width - 3) // 10)
    table = Table.grid(padding=(0, 1))
    table.add_column(min_width=2)
    for _ in range(min(per_line, len(cells))):
        table.add_column(justify="right", min_width=9)
    for start in range(0, len(cells), per_line):
        chunk = cells[start:start + per_line]
        table.add_row(Text("t", "dim"), *(Text(c[0], "dim") for c in chunk))
        table.add_row("", *(c[1] for c in chunk))
    return table


def step_times(d: RunDetails) -> RenderableType:
    if not d.mean.steps:
        return Text("no steps yet", style="dim")
    table = _grid(None, 6, 8, 9, 8)
    table.add_row(Text("ms per step", "dim"), *(Text(h, "dim") for h in
                                                 ("data", "compute", "optimizer", "total")))
    for label, split in ((f"mean of {d.mean.steps}", d.mean),
                         (f"last {d.recent.steps}", d.recent)):
        table.add_row(label, *(number(v, 4) for v in (split.data_ms, split.compute_ms,
                                                      split.optimizer_ms, split.total_ms)))
    total = d.mean.total_ms
    if total:
        table.add_row(Text("share of mean", "dim"), *(f"{v / total:.0%}" for v in (
            d.mean.data_ms, d.mean.compute_ms, d.mean.optimizer_ms)), "")
    notes = []
    prov = d.run.provenance or {}
    if prov.get("compile"):
        notes.append(f"compiled (warm-up {number(prov.get('compile_s'), 3)} s, timed apart)")
    train_s = next((e.train_s for e in reversed(d.epochs) if e.train_s is not None), None)
    if train_s is not None:
        notes.append(f"training time {duration(train_s)} (steps only; validation excluded)")
    return Group(table, Text(" · ".join(notes), "dim")) if notes else table


def quality(d: RunDetails) -> RenderableType:
    scores = (d.run.summary or {}).get("quality")
    if not scores:
        enabled = ((d.run.config or {}).get("preset", {}).get("quality", {}).get("enabled"))
        why = ("off in its preset ([quality] enabled = false)" if enabled is False else
               "scored when the run finishes" if d.run.status.value in ("queued", "running")
               else "not scored")
        return Text(f"no sample quality: {why}", style="dim")
    sampler = scores.get("sampler") or {}
    head = Text(f"{scores.get('trajectories', '?')} trajectories × {scores.get('length', '?')} "
                f"states, scored in {duration(scores.get('seconds'))}\n")
    head.append("sampler ", "dim")
    head.append_text(_pairs(((k.replace("_", " "), v) for k, v in sampler.items()), 200))
    floor = scores.get("floor") or {}
    table = _grid(None, 10, 10)
    table.add_row(Text("score", "dim"), Text("run", "dim"), Text("data floor", "dim"))
    for score in QUALITY_SCORES:
        table.add_row(score.header, _score(scores.get(score.key), score.format),
                      _score(floor.get(score.key), score.format))
    return Group(head, table)


def _score(value: float | None, format: str) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return number(value)
    return f"{value:{format}}"


def event_log(d: RunDetails) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_column(no_wrap=True, style="dim")
    table.add_column()
    for event in events(d):
        table.add_row(when(event.at) or "·", Text(event.text, style=event.style))
    note = Text("derived from the run row, its workers and its metrics (the database "
                "keeps no event table); times UTC, · unknown", "dim")
    return Group(note, table)


def config(d: RunDetails, width: int) -> RenderableType:
    run = d.run
    if not run.config:
        return Group(Text("not resolved yet: resolved when a worker starts it", "dim"),
                     _pairs((("preset", run.preset), ("epochs", run.epochs),
                             *((k, v) for k, v in run.overrides.items())), width))
    cfg: Mapping[str, Any] = run.config
    top = [(k, cfg.get(k)) for k in ("optimizer", "lr", "weight_decay", "schedule", "seed",
                                     "precision", "deterministic", "channels_last",
                                     "compile", "cuda_graph", "device")]
    if top[8][1] is None:
        top[8] = ("compile", "where it pays")
    lines: list[RenderableType] = [_pairs(top, width)]
    if cfg.get("options"):
        lines.append(_pairs((("options", ""), *cfg["options"].items()), width))
    preset = cfg.get("preset") or {}
    lines.append(Text.assemble(("preset ", "dim"), str(preset.get("name", run.preset)),
                               ("" if preset.get("name") == run.preset else
                                f"  ({run.preset})", "dim")))
    for section, values in preset.items():
        if section in SKIPPED_SECTIONS or not isinstance(values, Mapping):
            continue
        text = Text(f"[{section}] ", "bold")
        text.append_text(_pairs(values.items(), width, indent=2, start=text.cell_len))
        lines.append(text)
    if run.overrides:
        lines.append(_pairs((("--set", ""), *run.overrides.items()), width))
    return Group(*lines)


def provenance(d: RunDetails, width: int) -> RenderableType:
    prov = d.run.provenance or {}
    if not prov.get("device"):
        return Text("none yet: the worker records it when it starts the run", "dim")
    table = _grid(None, None)
    commit = prov.get("git_commit")
    dirty = prov.get("git_dirty")
    code = Text(f"diffbench {prov.get('diffbench') or '?'} · ")
    code.append(f"git {commit[:10]}" if commit else "not a git checkout")
    if dirty:
        code.append(" (dirty: uncommitted changes)", "yellow")
    elif dirty is False:
        code.append(" (clean)", "dim")
    table.add_row(Text("code", "dim"), code)
    table.add_row(Text("torch", "dim"), f"{prov.get('torch')} · CUDA {prov.get('cuda') or '—'}"
                  f" · Python {prov.get('python')}")
    packages = prov.get("packages") or {}
    if packages:
        table.add_row(Text("packages", "dim"), _pairs(packages.items(), width - 12))
    name = prov.get("device_name")
    device = f"{prov.get('device')}" + (f" ({name})" if name and name != prov.get("device")
                                         else "")
    table.add_row(Text("device", "dim"), f"{device} · {prov.get('threads', '?')} threads")
    table.add_row(Text("model", "dim"), f"{prov.get('parameters', 0):,} parameters · "
                  f"optimizer {prov.get('optimizer_implementation', '?')} · compile "
                  f"{_value(prov.get('compile'))} · CUDA graphs {_value(prov.get('cuda_graph'))}")
    worker_id = prov.get("worker_id")
    worker = d.workers.get(worker_id) if worker_id is not None else None
    host = Text(f"{prov.get('host', '?')} · pid {prov.get('pid', '?')} · worker "
                f"{worker_id if worker_id is not None else '?'}")
    if worker is not None:
        host.append(f" ({worker_state(worker, d.now)})", "dim")
    table.add_row(Text("host", "dim"), host)
    data = prov.get("data") or {}
    if data:
        path = str(data.get("path", "?")).rsplit("/", 1)[-1]
        table.add_row(Text("data", "dim"), f"{path} · sha256 {str(data.get('checksum'))[:12]}…")
    if prov.get("platform"):
        table.add_row(Text("platform", "dim"), str(prov["platform"]))
    return table


def traceback(d: RunDetails) -> RenderableType | None:
    """The failed run's traceback (the worker's, as it caught it), or None."""
    if not d.run.traceback:
        return None
    return Syntax(d.run.traceback.rstrip(), "pytb", theme="ansi_dark", word_wrap=True,
                  background_color="default")


def frame(images: FrameImages | None, index: int, count: int, *, columns: int,
          ascii: bool) -> RenderableType:
    """One preview: generated above the data it is set against (`tui.render`, as the
    vorticity pane), with where it is among the run's previews."""
    if images is None:
        return Text("no previews stored yet: the worker stores one every "
                    "train.samples_every epochs" if not count else "reading…", style="dim")
    f = images.frame
    what = ("scored by the quality assessment" if f.name == "quality"
            else f"generated after epoch {f.epoch + 1}")
    out = Text.assemble((f"{index + 1}/{count} ", "bold"), f"{what} (step {f.step})  ",
                        (PREVIEW_KEYS, "dim"), "\n")
    rows = [("generated", images.generated)]
    if images.data:
        rows.append((images.data_title, images.data))
    else:
        out.append(images.data_title + "\n", "dim")
    for title, pictures in rows:
        out.append(title + "\n", "bold")
        try:
            out.append_text(render_row(list(pictures), columns=columns, ascii=ascii,
                                       titles=[f"t{i}" for i in range(len(pictures))]))
        except ValueError as error:
            out.append(str(error), "dim")
        out.append("\n")
    out.append_text(legend(ascii=ascii, low="−1.25", high="+1.25", steps=16))
    return out

