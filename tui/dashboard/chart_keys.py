"""The curves pane's keys and what they select, mixed into the app (`DashboardApp`).

The keys change `ChartOptions` (x axis, log axes, smoothing, the t-bin view) or pin the
reference; `_plotted` turns the app's selection (the selected run, the marked ones, the
grouping, the pinned reference) into what the curves pane draws, and `_plotted_ids` into
the runs whose curves the next read fetches.
"""

from __future__ import annotations

from dataclasses import replace

from textual.binding import Binding

from . import charts
from .charts import AUTO, ChartOptions
from .state import RunView, Snapshot, group_runs

CHART_KEYS = (
    ("t", "chart('x')", "x-axis", "the curves' x axis: step, training time or epoch", True),
    ("l", "chart('log_y')", "log", "log or linear loss axis", False),
    ("x", "chart('log_x')", "log-x", "log or linear x axis of the curves", False),
    ("m", "chart('smooth')", "EMA", "smooth the train loss (EMA; the raw curve faint behind "
     "it)", False),
    ("M", "chart('factor')", "EMA factor", "the next EMA factor (0.6 … 0.99)", False),
    ("b", "chart('view')", "t-bins", "the curves pane: loss curves or the fixed-noise loss "
     "per t-bin", False),
    ("p", "pin", "pin", "pin the selected run as the reference on every chart (again: "
     "unpin; default: the best AdamW · linear run)", False),
)
CHART_BINDINGS = [Binding(key, action, description, show=show, tooltip=text)
                  for key, action, description, text, show in CHART_KEYS]


class ChartKeys:
    """Mixed into the app, whose state it reads and sets."""

    snapshot: Snapshot | None
    selected: int | None
    marked: set[int]
    grouped: bool
    chart: ChartOptions
    pinned: int | str | None  # the reference run; AUTO: `charts.default_reference`

    def action_chart(self, change: str) -> None:
        options = self.chart
        if change == "x":
            options = options.next_x()
        elif change == "factor":
            options = options.next_factor()
        elif change == "view":
            options = replace(options, view="loss" if options.view == "bins" else "bins")
        else:  # a flag: log_y, log_x, smooth
            options = replace(options, **{change: not getattr(options, change)})
        self.chart = options
        self._show_details()

    def action_pin(self) -> None:
        """Pin the selected run as the reference; on the reference itself, unpin (none)."""
        if self.selected is None:
            return
        _, reference = self._plotted(self._views())
        self.pinned = None if self.selected in {r.id for r in reference} else self.selected
        self.notify(f"reference: run #{self.pinned}" if self.pinned is not None
                    else "no reference run", title="pin")
        self._show_details()
        self.refresh_data()

    def _mark_setting(self) -> None:
        """Grouped, `space` marks every seed of the selected setting, or unmarks them."""
        group = next((g for g in group_runs(self.visible_runs())
                      if self.selected in g.run_ids), None)
        ids = set(group.run_ids) if group else {self.selected}
        self.marked = self.marked - ids if ids <= self.marked else self.marked | ids

    def _views(self) -> dict[int, RunView]:
        return {r.id: r for r in (self.snapshot.runs if self.snapshot else ())}

    def _plotted(self, views: dict[int, RunView]
                 ) -> tuple[list[tuple[RunView, ...]], tuple[RunView, ...]]:
        """The curves pane's items (runs, or groups of seeds) and the reference's runs."""
        groups = group_runs(self.visible_runs()) if self.grouped else None
        items = charts.plotted(views, selected=self.selected, marked=self.marked,
                               groups=groups)
        pinned = self.pinned
        if pinned == AUTO:
            preset = views[self.selected].preset if self.selected in views else None
            pinned = charts.default_reference(views.values(), preset)
        return items, charts.reference_runs(views, pinned, groups)

    def _plotted_ids(self) -> tuple[int, ...]:
        """The runs whose curves the next read fetches: the plotted ones, the reference."""
        items, reference = self._plotted(self._views())
        return tuple(dict.fromkeys([*self.marked, *(r.id for runs in (*items, reference)
                                                    for r in runs)]))
