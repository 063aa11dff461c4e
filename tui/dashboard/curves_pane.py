"""Loss curves: train (lines) and validation (dots) of the selected run and the marked
ones, against step or training time, log scale by default, one colour per optimizer."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from .content import set_content
from .palette import optimizer_rgb, optimizer_style
from .series import RunCurves
from .state import RunView

NO_RUN = "no run selected: queue runs (diffbench queue add …, or press a) and pick one"
NO_METRICS = "no metrics yet for run {id}: it is {status}; start a worker: diffbench worker"


def legend(runs: Sequence[RunView]) -> Text:
    """Optimizer colours, the line/dot key and the plotted run ids."""
    out = Text()
    for name in dict.fromkeys(r.optimizer for r in runs):
        out.append("■ ", optimizer_style(name)).append(f"{name}  ")
    out.append("─ train  • valid   runs ")
    out.append(" ".join(f"#{r.id}" for r in runs), "bold")
    return out


class CurvesPane(Vertical):
    """Redrawn only when what it shows changed: the plotted runs' curves (the same
    `RunCurves` objects while no metric row arrives), the axes or the selection."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static("loss", classes="pane-title", id="curves-title")
        yield PlotextPlot(id="loss-plot")
        yield Static("", id="loss-legend")
        yield Static(NO_RUN, id="curves-empty", classes="empty")

    def show(self, plotted: Sequence[tuple[RunView, RunCurves]], *, by_time: bool,
             log: bool, selected: RunView | None) -> None:
        key = (tuple((r.id, r.optimizer, c) for r, c in plotted), by_time, log,
               None if selected is None else (selected.id, selected.status))
        if key == self._shown:
            return
        self._shown = key
        plot = self.query_one("#loss-plot", PlotextPlot)
        empty = self.query_one("#curves-empty", Static)
        has_data = any(c.train_by_step.x or c.valid_by_step.x for _, c in plotted)
        axis = "training time (s)" if by_time else "step"
        scale = "log" if log else "linear"
        set_content(self.query_one("#curves-title", Static),
                    f"loss ({scale}) vs {axis}   [t] step/time  [l] log  [space] overlay")
        if not has_data:
            set_content(empty, NO_RUN if selected is None else
                        NO_METRICS.format(id=selected.id, status=selected.status))
        empty.display = not has_data
        plot.display = has_data
        set_content(self.query_one("#loss-legend", Static),
                    legend([r for r, _ in plotted]) if has_data else "")
        if not has_data:
            return
        plt = plot.plt
        plt.clear_figure()
        plt.yscale(scale)
        plt.xlabel(axis)
        for run, curves in plotted:
            color = optimizer_rgb(run.optimizer)
            train = curves.train_by_time if by_time else curves.train_by_step
            valid = curves.valid_by_time if by_time else curves.valid_by_step
            if train.x:
                plt.plot(list(train.x), list(train.y), color=color, marker="braille")
            if valid.x:
                plt.scatter(list(valid.x), list(valid.y), color=color, marker="dot")
        plot.refresh()
