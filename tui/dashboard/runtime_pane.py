"""Runtime per step: the selected run's forward+backward and optimizer milliseconds over
its steps, and each optimizer's mean ms/step as a ratio to AdamW's where they compare: on
the selected run's device and preset, from its calibration when there is one, else from the
runs' own times, with the caveat when runs shared a machine (`costs.step_costs`).

The plot keeps a minimum height (the stylesheet's): squeezed below it, plotext writes its
y labels into the x axis' (`118.11.0`). On a full-size terminal the table stands beside
the plot, elsewhere below it."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from .content import set_content
from .costs import CostTable
from .palette import optimizer_style
from .runs_pane import number
from .series import RunCurves
from .state import RunView

COMPUTE_RGB = (86, 156, 214)
OPTIMIZER_RGB = (240, 170, 60)
NO_STEPS = "no step timings yet: the selected run has not trained (start diffbench worker)"


def _style(rgb: tuple[int, int, int]) -> str:
    return "rgb({},{},{})".format(*rgb)


def cost_table(table: CostTable) -> Text:
    """One line per optimizer: mean ms/step ± its spread, the ratio to AdamW with its range,
    a bar of the ratio; where the numbers come from, and the caveats."""
    if table.device is None:
        return Text("ratio to AdamW: select a run that has trained", style="dim")
    out = Text(f"ms/step, ratio to AdamW on {table.device} · {table.preset}\n", style="bold")
    if table.calibration is not None:
        c = table.calibration
        out.append(f"calibration #{c.id}, {c.rounds} rounds × {c.steps} steps, "
                   f"{c.created_at:%Y-%m-%d}\n", style="dim")
    else:
        out.append("the runs' own times: ratio of means (range over runs)\n", style="dim")
    top = max((c.ratio.value for c in table.rows if c.ratio), default=0.0) or 1.0
    for cost in table.rows:
        out.append(f"{cost.optimizer:>12} ", optimizer_style(cost.optimizer))
        spread = "" if cost.spread is None else f"±{number(cost.spread, 2)}"
        out.append(f"{number(cost.ms_per_step, 3):>6} {spread:<6} ")
        if cost.ratio is None:
            out.append("no AdamW to compare\n", "dim")
            continue
        out.append(f"{cost.ratio.text():<18} ")
        out.append("█" * max(1, round(8 * cost.ratio.value / top)) + "\n",
                   optimizer_style(cost.optimizer))
    for note in table.notes:
        out.append(note + "\n", "bold yellow" if note.startswith("⚠") else "dim")
    out.rstrip()
    return out


class RuntimePane(Vertical):
    """Redrawn only when the selected run, its curves or the cost table changed."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple | None = None

    def compose(self) -> ComposeResult:
        yield Static("runtime per step (ms): ─ fwd+bwd  ─ optimizer", classes="pane-title",
                     id="runtime-title")
        with Container(id="runtime-body"):  # side by side on a full-size terminal
            yield PlotextPlot(id="runtime-plot")
            yield Static(NO_STEPS, id="runtime-empty", classes="empty")
            yield Static("", id="runtime-costs")

    def show(self, run: RunView | None, curves: RunCurves | None, costs: CostTable) -> None:
        key = (None if run is None else (run.id, run.optimizer, run.device), curves, costs)
        if key == self._shown:
            return
        self._shown = key
        plot = self.query_one("#runtime-plot", PlotextPlot)
        has_data = curves is not None and bool(curves.compute_ms.x)
        title = Text("runtime per step (ms): ")
        title.append("─ fwd+bwd", _style(COMPUTE_RGB)).append("  ")
        title.append("─ optimizer", _style(OPTIMIZER_RGB))
        if run is not None:
            title.append(f"   run #{run.id} {run.optimizer}")
        set_content(self.query_one("#runtime-title", Static), title)
        self.query_one("#runtime-empty", Static).display = not has_data
        plot.display = has_data
        set_content(self.query_one("#runtime-costs", Static), cost_table(costs))
        if not has_data:
            return
        plt = plot.plt
        plt.clear_figure()
        plt.xlabel("step")
        plt.plot(list(curves.compute_ms.x), list(curves.compute_ms.y), color=COMPUTE_RGB,
                 marker="braille")
        plt.plot(list(curves.optimizer_ms.x), list(curves.optimizer_ms.y),
                 color=OPTIMIZER_RGB, marker="braille")
        plot.refresh()
