"""Loss curves: the train loss (lines) and the fixed-noise validation loss (points) of the
selected run and the marked ones, or (grouped) of their settings as a mean with a ±std band
over seeds; the reference run behind them in grey; or the loss per t-bin (`b`).

What is drawn is computed in `charts`; this module only draws it with plotext. Each plotted
item has its optimizer's colour (a lighter shade for a second item of the same optimizer);
with ``ascii`` (``--ascii``, ``NO_COLOR``) every line gets its own ASCII marker instead of
braille, so the lines stay apart without colour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.color import Color
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from .charts import X_TITLES, ChartOptions, Trace, bin_ticks, time_title, traces
from .content import set_content
from .palette import optimizer_rgb
from .series import Curve, RunCurves
from .sorting import VALID_TITLE
from .state import RunView

NO_RUN = "no run selected: queue runs (diffbench queue add …, or press a) and pick one"
NO_METRICS = "no metrics yet for run {id}: it is {status}; start a worker: diffbench worker"
NO_EPOCH = "no epoch has ended yet: the epoch axis needs the steps per epoch (press t)"
NO_BINS = ("no t-binned loss for run {id}: it is measured at each validation (runs from "
           "before it have none); press b for the loss curves")
KEYS = "t axis  x log-x  l log-y  m EMA  b t-bins  p pin"  # M, the EMA factor: ? lists it

REFERENCE_RGB = (175, 175, 175)  # the reference's fixed style: grey, drawn behind the rest
FAINT = 0.6  # how far a faint colour (band, raw curve) goes towards the background
ASCII_MARKS = "*+x%&$#@"  # one per plotted item, in order
ASCII_REFERENCE, ASCII_POINT, ASCII_RAW, ASCII_BAND = "=", "O", ":", "."
Rgb = tuple[int, int, int]


def blend(rgb: Rgb, background: Rgb, amount: float) -> Rgb:
    """``rgb`` moved ``amount`` (0…1) of the way towards ``background``."""
    return tuple(round(c + (b - c) * amount) for c, b in zip(rgb, background, strict=True))


def colours(trace_list: Sequence[Trace]) -> list[Rgb]:
    """The optimizer's colour, lighter for each further item of the same optimizer; grey
    for the reference."""
    seen: dict[str, int] = {}
    out = []
    for trace in trace_list:
        if trace.reference:
            out.append(REFERENCE_RGB)
            continue
        k = seen[trace.optimizer] = seen.get(trace.optimizer, -1) + 1
        out.append(blend(optimizer_rgb(trace.optimizer), (255, 255, 255), min(0.6, 0.3 * k)))
    return out


def marks(trace_list: Sequence[Trace]) -> list[str]:
    """Each trace's ASCII marker (the reference's is fixed)."""
    out, k = [], 0
    for trace in trace_list:
        if trace.reference:
            out.append(ASCII_REFERENCE)
        else:
            out.append(ASCII_MARKS[k % len(ASCII_MARKS)])
            k += 1
    return out


def band_path(low: Curve, high: Curve, columns: int, *, log_x: bool) -> tuple[list, list]:
    """A path that sweeps the band up and down once per x step (``columns`` steps), so a
    line drawn along it fills the band."""
    x = np.asarray(low.x)
    if len(x) == 1:
        return [x[0], x[0]], [low.y[0], high.y[0]]
    grid = (np.geomspace(x[0], x[-1], columns) if log_x and x[0] > 0
            else np.linspace(x[0], x[-1], columns))
    lo, hi = np.interp(grid, x, low.y), np.interp(grid, x, high.y)
    ys = np.where(np.arange(columns)[:, None] % 2 == 0, np.stack([lo, hi], 1),
                  np.stack([hi, lo], 1))
    return np.repeat(grid, 2).tolist(), ys.ravel().tolist()


def _positive(curve: Curve, floor: float) -> Curve:
    return Curve(curve.x, tuple(max(y, floor) for y in curve.y))


def draw(plt, trace_list: Sequence[Trace], options: ChartOptions, *, ascii: bool,
         background: Rgb, columns: int, edges: Sequence[float] | None = None,
         x_title: str | None = None) -> None:
    """Draw ``trace_list`` on the plotext figure ``plt``: bands, the reference, raw curves,
    lines, then points, so what matters most is on top."""
    plt.clear_figure()
    plt.yscale("log" if options.log_y else "linear")
    bins = options.view == "bins"
    plt.xscale("log" if options.log_x and not bins else "linear")
    if bins:
        n = max(len(t.line.x) for t in trace_list)
        plt.xticks(*bin_ticks(edges, n))
        plt.xlabel("noise level t (each bin's upper edge)")
    else:
        plt.xlabel(x_title or X_TITLES[options.x])
    tints, chars = colours(trace_list), marks(trace_list)
    floor = min((y for t in trace_list for y in t.line.y if y > 0), default=1.0) / 2
    line = "braille"
    for trace, rgb in zip(trace_list, tints, strict=True):
        if trace.band is not None and not trace.reference:
            low, high = trace.band
            if options.log_y:
                low, high = _positive(low, floor), _positive(high, floor)
            x, y = band_path(low, high, max(2 * columns, 240), log_x=options.log_x and not bins)
            plt.plot(x, y, color=blend(rgb, background, FAINT),
                     marker=ASCII_BAND if ascii else "░")
    order = sorted(zip(trace_list, tints, chars, strict=True), key=lambda t: not t[0].reference)
    for trace, rgb, _ in order:
        if trace.raw is not None:
            plt.plot(list(trace.raw.x), list(trace.raw.y), color=blend(rgb, background, FAINT),
                     marker=ASCII_RAW if ascii else line)
    for trace, rgb, char in order:
        if trace.line.x:
            plt.plot(list(trace.line.x), list(trace.line.y), color=rgb,
                     marker=char if ascii else line)
        points = trace.line if bins else trace.points
        if points is not None and points.x:
            plt.scatter(list(points.x), list(points.y), color=rgb,
                        marker=(char if bins else ASCII_POINT) if ascii else "dot")


def legend(trace_list: Sequence[Trace], options: ChartOptions, *, ascii: bool,
           grouped: bool) -> Text:
    """What each colour (or ASCII marker) is, the line/point key and the plotted runs."""
    out = Text()
    tints, chars = colours(trace_list), marks(trace_list)
    items = [(t, rgb, c) for t, rgb, c in zip(trace_list, tints, chars, strict=True)
             if not t.reference]
    reference = [(t, rgb, c) for t, rgb, c in zip(trace_list, tints, chars, strict=True)
                 if t.reference]

    def swatch(char: str) -> str:
        return f"{char} " if ascii else "■ "

    if grouped:
        for trace, rgb, char in items:
            out.append(swatch(char), "rgb({},{},{})".format(*rgb))
            out.append(trace.label + "\n")
    else:
        for name in dict.fromkeys(t.optimizer for t, _, _ in items):
            trace, rgb, char = next(i for i in items if i[0].optimizer == name)
            out.append(swatch(char), "rgb({},{},{})".format(*rgb)).append(f"{name}  ")
    if options.view == "bins":
        out.append("fixed-noise loss, last validation")
    else:
        smoothed = f" (EMA {options.factor:g}, raw {ASCII_RAW if ascii else 'faint'})" \
            if options.smooth else ""
        out.append(f"{'lines' if ascii else '─'} train{smoothed}  "
                   f"{ASCII_POINT if ascii else '•'} {VALID_TITLE}")
        if any(t.stochastic for t in trace_list):
            out.append(" (stochastic where not measured)", "dim")
    if any(t.band is not None for t in trace_list):
        out.append(f"  {ASCII_BAND if ascii else '░'} ±std")
    if not grouped:
        out.append("   runs ")
        out.append(" ".join(f"#{t.run_ids[0]}" for t, _, _ in items), "bold")
    for trace, rgb, _ in reference:
        out.append(f"\n{ASCII_REFERENCE if ascii else '━'} {trace.label}",
                   "rgb({},{},{})".format(*rgb))
    return out


class CurvesPane(Vertical):
    """Redrawn only when what it shows changed: the plotted runs' curves (the same
    `RunCurves` objects while no metric row arrives), the options or the selection."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static("loss", classes="pane-title", id="curves-title")
        yield Static(KEYS, classes="pane-keys", id="curves-keys")
        yield PlotextPlot(id="loss-plot")
        yield Static("", id="loss-legend")
        yield Static(NO_RUN, id="curves-empty", classes="empty")

    def show(self, items: Sequence[tuple[RunView, ...]], reference: tuple[RunView, ...],
             curves: Mapping[int, RunCurves], options: ChartOptions, *, grouped: bool,
             ascii: bool, selected: RunView | None) -> None:
        """Draw ``items`` (runs, or groups of seeds when ``grouped``) and the
        ``reference`` run or group."""
        bins = options.view == "bins"
        key = (tuple(tuple((r.id, r.optimizer, curves.get(r.id), r.step_ms, r.shared,
                            r.fixed_valid_bins if bins else None) for r in runs)
                     for runs in (reference, *items)),
               options, grouped, ascii,
               None if selected is None else (selected.id, selected.status))
        if key == self._shown:
            return
        self._shown = key
        drawn = traces(items, reference, curves, options, grouped=grouped)
        has_data = any(not t.reference for t in drawn)
        x_title, caveat = (time_title(r for runs in (reference, *items) for r in runs)
                           if options.x == "time" and not bins else (X_TITLES[options.x], None))
        set_content(self.query_one("#curves-title", Static), self._title(options, x_title))
        plot = self.query_one("#loss-plot", PlotextPlot)
        empty = self.query_one("#curves-empty", Static)
        if not has_data:
            set_content(empty, self._empty(selected, options))
        empty.display = not has_data
        plot.display = has_data
        key_text = legend(drawn, options, ascii=ascii, grouped=grouped)
        if reference and not any(t.reference for t in drawn):  # it is one of the items
            first = reference[0]
            named = (f"{first.optimizer}·{first.schedule} lr {first.lr:.3g}" if grouped
                     else f"#{first.id}")
            key_text.append(f"\n{ASCII_REFERENCE if ascii else '━'} reference: {named}, "
                            "plotted above", "rgb({},{},{})".format(*REFERENCE_RGB))
        if caveat:
            key_text.append(f"\n{caveat}", "yellow")
        set_content(self.query_one("#loss-legend", Static),  # its lines wrap: lay out
                    key_text if has_data else "", layout=True)
        if not has_data:
            return
        edges = next((curves[r.id].loss_bins for runs in items for r in runs
                      if r.id in curves and curves[r.id].loss_bins), None)
        surface = Color.parse(self.app.theme_variables.get("surface", "#1e1e1e"))
        draw(plot.plt, drawn, options, ascii=ascii, background=surface.rgb,
             columns=plot.size.width or 60, edges=edges, x_title=x_title)
        plot.refresh()

    @staticmethod
    def _title(options: ChartOptions, x_title: str) -> str:
        scale = "log" if options.log_y else "linear"
        if options.view == "bins":
            return f"fixed-noise loss ({scale}) per t-bin, last validation"
        parts = [f"loss ({scale}) vs {x_title}"]
        if options.smooth:
            parts.append(f"EMA {options.factor:g}")
        if options.log_x:
            parts.append("log-x")
        return " · ".join(parts)

    @staticmethod
    def _empty(selected: RunView | None, options: ChartOptions) -> str:
        if selected is None:
            return NO_RUN
        if options.view == "bins":
            return NO_BINS.format(id=selected.id)
        if options.x == "epoch" and selected.steps:
            return NO_EPOCH
        return NO_METRICS.format(id=selected.id, status=selected.status)
