"""The dashboard app: layout, keys, the refresh loop and the actions.

Messages go up, state goes down: a reader thread reads the database (`DashboardReader`,
`SeriesCache`, `load_pictures`) and hands the results to `_apply` on the UI thread, which
pushes them into the panes. At most one read is in flight; a tick that finds one running
is skipped. Actions (queue, cancel, retry, export) ask for confirmation and write from a
thread worker, then refresh.

Layout: from `FULL` (e.g. 160×48) all five panes are visible in a grid; from `WIDE` × `TALL`
(e.g. 120×40) runtime and vorticity share one slot (keys 3 and 4 pick); below (e.g. 80×24
over SSH) one pane fills the screen and the tabs (keys 1–5) pick it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from threading import Thread
from typing import ClassVar

from rich.markup import escape
from rich.traceback import Traceback
from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.geometry import Size
from textual.widgets import DataTable, Footer, Input, Static, Tab, Tabs

from diffbench.storage.db import Database, StorageError
from diffbench.storage.filters import FilterError, RunFilter
from diffbench.storage.states import FINAL
from diffbench.storage.workspace import Workspace

from ..output import no_color
from .actions import perform
from .chart_keys import CHART_BINDINGS, ChartKeys
from .charts import AUTO, ChartOptions
from .content import set_content
from .costs import step_costs
from .curves_pane import CurvesPane
from .dialogs import ConfirmDialog, ExportDialog, HelpScreen, QueueDialog
from .forms import QueueFields
from .palette import STATUS_COLOR, STATUS_SYMBOL
from .preview import Pictures, load_pictures
from .run_screen import RunScreen
from .runs_pane import RunsPane
from .runtime_pane import RuntimePane
from .series import RunCurves, SeriesCache
from .sorting import COLUMNS, sort_runs
from .state import Clock, DashboardReader, RunView, Snapshot, group_runs
from .vorticity_pane import VorticityPane
from .workers_pane import WorkersPane

WIDE, TALL = 120, 36
FULL = (150, 44)  # from here every pane is visible; below, runtime and vorticity share one
VIEWS = ("runs", "curves", "runtime", "vorticity", "workers")
ACTIONS = ("queue", "cancel", "retry", "export")


@dataclass(frozen=True)
class DashboardOptions:
    refresh_s: float = 1.0
    read_only: bool = False
    ascii: bool = False
    clock: Clock | None = None  # None: the database clock (tests pin a time)
    location: str | None = None  # shown in the header; None: the database URL
    export_dir: Path | None = None  # the export dialog's default folder; None: cwd


def _binding(key: str, action: str, description: str, help_text: str, *,
             show: bool = True, key_display: str | None = None) -> Binding:
    return Binding(key, action, description, show=show, key_display=key_display,
                   tooltip=help_text)


class DashboardApp(ChartKeys, App[None]):
    CSS_PATH = "dashboard.tcss"
    TITLE = "diffbench"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[Binding]] = [
        _binding("q", "quit", "quit", "quit (restores the terminal)"),
        _binding("question_mark", "help", "keys", "show these keys", key_display="?"),
        _binding("slash", "filter", "filter", "filter runs: text or status:running opt:muon",
                 key_display="/"),
        _binding("escape", "clear_filter", "clear", "clear the filter", show=False),
        _binding("s", "sort", "sort", "sort by the next column"),
        _binding("S", "reverse", "reverse", "reverse the sort order", show=False),
        _binding("g", "group", "group", "group runs by setting: final loss mean ± std "
                 "over seeds; the curves draw each setting's mean with a ±std band"),
        _binding("space", "mark", "mark", "mark/unmark the run (grouped: its setting) to "
                 "overlay its curves", key_display="space"),
        _binding("enter", "open_run", "run", "the selected run whole: config, provenance, "
                 "losses, quality, events, previews (esc: back)", show=False),
        *CHART_BINDINGS,
        _binding("a", "queue", "queue", "queue runs (a form, then confirm)"),
        _binding("c", "cancel", "cancel", "cancel the marked runs, else the selected one"),
        _binding("r", "retry", "retry", "retry the marked runs, else the selected one"),
        _binding("e", "export", "export", "export the table's runs to CSV"),
        *(_binding(str(i), f"view('{v}')", v, f"show the {v} pane (small terminals)",
                   show=False) for i, v in enumerate(VIEWS, 1)),
    ]

    def __init__(self, db: Database, workspace: Workspace,
                 options: DashboardOptions | None = None) -> None:
        super().__init__()
        self.db, self.workspace = db, workspace
        self.options = options or DashboardOptions()
        self.reader = DashboardReader(db, clock=self.options.clock)
        self.series = SeriesCache(db)
        self.snapshot: Snapshot | None = None
        self.curves: dict[int, RunCurves] = {}
        self.pictures: Pictures | None = None
        self.selected: int | None = None
        self.marked: set[int] = set()
        self.filter = RunFilter()
        self.sort_column, self.sort_reverse = "id", False
        self.grouped = False
        self.chart = ChartOptions()
        self.pinned: int | str | None = AUTO
        self.view = "runs"
        self.ascii = self.options.ascii
        self._reading = False
        self._again = False

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield Static("diffbench", id="header")
        yield Tabs(*(Tab(f"{i} {v}", id=f"tab-{v}") for i, v in enumerate(VIEWS, 1)),
                   id="tabs")
        with Container(id="main"):
            yield RunsPane(id="runs", classes="pane -active")
            yield CurvesPane(id="curves", classes="pane")
            yield RuntimePane(id="runtime", classes="pane")
            yield WorkersPane(id="workers", classes="pane")
            yield VorticityPane(id="vorticity", classes="pane")
        yield Footer()

    def on_mount(self) -> None:
        self.ascii = self.options.ascii or no_color() or self.console.color_system is None
        self._layout(self.size)
        self.query_one("#filter", Input).display = False
        self.query_one("#runs-table", DataTable).focus()
        self.set_interval(self.options.refresh_s, self.refresh_data)
        self.refresh_data()

    def on_resize(self, event) -> None:
        self._layout(event.size)

    def _layout(self, size: Size) -> None:
        narrow = size.width < WIDE or size.height < TALL
        full = size.width >= FULL[0] and size.height >= FULL[1]
        screen = self.screen_stack[0]
        screen.set_class(narrow, "narrow")
        screen.set_class(not narrow and not full, "medium")
        screen.set_class(not narrow and full, "full")

    def action_view(self, view: str) -> None:
        self.view = view
        for name in VIEWS:
            self.query_one(f"#{name}").set_class(name == view, "-active")
        self.query_one("#tabs", Tabs).active = f"tab-{view}"
        if view in ("runtime", "vorticity"):  # they share a slot on medium terminals
            self.query_one("#main").set_class(view == "vorticity", "-vorticity")
        if view == "runs":
            self.query_one("#runs-table", DataTable).focus()

    def on_tabs_tab_activated(self, event: Tabs.TabActivated) -> None:
        view = event.tab.id.removeprefix("tab-") if event.tab and event.tab.id else "runs"
        if view != self.view:
            self.action_view(view)

    # ------------------------------------------------------------------ refresh

    def refresh_data(self) -> None:
        """Start a read unless one is in flight (then read again right after it)."""
        if self._reading:
            self._again = True
            return
        self._reading, self._again = True, False
        Thread(target=self._read, args=(self.selected, self._plotted_ids()),
               name="diffbench-read", daemon=True).start()

    def _read(self, selected: int | None, marked: tuple[int, ...]) -> None:
        """Read on a daemon thread, not a Textual thread worker: Python waits for those
        (executor threads) when it exits, so `q` during a long read (the first one on a
        large database takes seconds) would hang until it ends."""
        try:
            snapshot = self.reader.refresh()
            known = {r.id for r in snapshot.runs}
            if selected not in known:
                selected = None
            ended = {r.id for r in snapshot.runs if r.status in FINAL}  # no row comes
            curves = self.series.update((i for i in (selected, *marked) if i in known), ended)
            pictures = self._pictures(selected, curves.get(selected))
            result: tuple = (self._apply, snapshot, curves, pictures)
        except StorageError as error:
            result = (self._failed, str(error))
        except Exception:  # a bug: end the app with the traceback, as a worker would
            result = (self.panic, Traceback())
        with contextlib.suppress(RuntimeError):  # the app exited meanwhile
            self.call_from_thread(*result)

    def _pictures(self, run_id: int | None, curves: RunCurves | None) -> Pictures | None:
        """The preview of ``run_id``, reloaded only when its latest sample changes."""
        if run_id is None:
            return None
        sample_id = None if curves is None else curves.sample_id
        old = self.pictures
        if old is not None and (old.run_id, old.sample_id) == (run_id, sample_id):
            return old
        return load_pictures(self.db, self.workspace, run_id, sample_id)

    def _failed(self, message: str) -> None:
        self._reading = False
        self._update("#header", f"[b]diffbench[/] · [red]{escape(message)}[/]")

    def _apply(self, snapshot: Snapshot, curves: dict[int, RunCurves],
               pictures: Pictures | None) -> None:
        self._reading = False
        self.snapshot, self.curves, self.pictures = snapshot, curves, pictures
        self.marked &= {r.id for r in snapshot.runs}
        self._show_header()
        self._show_runs()
        if self.selected is None:
            self.selected = self.query_one(RunsPane).current_run()
            self._again = self._again or self.selected is not None
        self._show_details()
        self._again = self._again or not set(self._plotted_ids()) <= curves.keys()
        self.query_one(WorkersPane).show(snapshot.workers)
        if self._again:
            self.refresh_data()

    def _show_header(self) -> None:
        assert self.snapshot is not None
        parts = ["[b]diffbench[/]"]
        for status, count in self.snapshot.counts.items():
            if count:
                parts.append(f"[{STATUS_COLOR[status]}]{STATUS_SYMBOL[status]} {count} "
                             f"{status}[/]")
        if not any(self.snapshot.counts.values()):
            parts.append("no runs")
        if self.options.read_only:
            parts.append("[b]read-only[/]")
        parts.append(escape(self.options.location or self.db.url))
        self._update("#header", " · ".join(parts))

    def _update(self, selector: str, content: str) -> None:
        set_content(self.query_one(selector, Static), content)

    def visible_runs(self) -> list[RunView]:
        runs = self.snapshot.runs if self.snapshot else ()
        shown = [r for r in runs if self.filter.matches(r)] if self.filter else runs
        return sort_runs(shown, self.sort_column, reverse=self.sort_reverse)

    def _show_runs(self) -> None:
        pane = self.query_one(RunsPane)
        total = len(self.snapshot.runs) if self.snapshot else 0
        if self.grouped:
            pane.show_groups(group_runs(self.visible_runs()), total=total, marked=self.marked)
        else:
            pane.show_runs(self.visible_runs(), total=total, marked=self.marked,
                           sort=self.sort_column, reverse=self.sort_reverse)

    def _show_details(self) -> None:
        views = {r.id: r for r in (self.snapshot.runs if self.snapshot else ())}
        run = views.get(self.selected) if self.selected is not None else None
        items, reference = self._plotted(views)
        self.query_one(CurvesPane).show(items, reference, self.curves, self.chart,
                                        grouped=self.grouped, ascii=self.ascii, selected=run)
        costs = step_costs(views.values(), run, self.snapshot.calibrations if self.snapshot else {})
        self.query_one(RuntimePane).show(run, self.curves.get(self.selected), costs)
        pictures = self.pictures if run and self.pictures and \
            self.pictures.run_id == run.id else None
        self.query_one(VorticityPane).show(pictures, ascii=self.ascii)

    def on_runs_pane_highlighted(self, event: RunsPane.Highlighted) -> None:
        if event.run_id != self.selected:
            self.selected = event.run_id
            self._show_details()
            self.refresh_data()

    # ------------------------------------------------------------------ view keys

    def action_help(self) -> None:
        keys = [(b.key_display or b.key, b.tooltip or b.description) for b in self.BINDINGS
                if isinstance(b, Binding) and not b.action.startswith("view(")]
        keys.append(("1-5", "show one pane: " + ", ".join(VIEWS) + " (small terminals)"))
        keys.append(("↑/↓", "select a run"))
        self.push_screen(HelpScreen(keys))

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id != "filter":
            return
        error = self.query_one("#filter-error", Static)
        try:
            self.filter = RunFilter.parse(event.value)
        except FilterError as problem:
            error.update(f"[red]{problem}[/]")
            return
        error.update("")
        self._show_runs()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.display = bool(event.value.strip())
            self.query_one("#runs-table", DataTable).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.value = ""
        field.display = False
        self.filter = RunFilter()
        self.query_one("#filter-error", Static).update("")
        self.query_one("#runs-table", DataTable).focus()
        self._show_runs()

    def action_sort(self) -> None:
        keys = self.query_one(RunsPane).columns()
        if self.sort_column not in keys:
            keys = [k for k, _ in COLUMNS]
        self.sort_column = keys[(keys.index(self.sort_column) + 1) % len(keys)]
        self._show_runs()

    def action_reverse(self) -> None:
        self.sort_reverse = not self.sort_reverse
        self._show_runs()

    def action_group(self) -> None:
        self.grouped = not self.grouped
        self._show_runs()
        self._show_details()
        self.refresh_data()

    def action_mark(self) -> None:
        if self.selected is None:
            return
        if self.grouped:
            self._mark_setting()
        else:
            self.marked ^= {self.selected}
        self._show_runs()
        self.refresh_data()


    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open_run()  # enter on the runs table, which takes the key first

    def action_open_run(self) -> None:
        if self.selected is not None:
            self.push_screen(RunScreen.of(self, self.selected))

    # ------------------------------------------------------------------ actions

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Read-only: the write actions show as disabled and do nothing."""
        if self.options.read_only and action in ACTIONS:
            return None
        return True

    def _targets(self) -> list[int]:
        return sorted(self.marked) or ([self.selected] if self.selected is not None else [])

    def action_queue(self) -> None:
        views = {r.id: r for r in (self.snapshot.runs if self.snapshot else ())}
        current = views.get(self.selected) if self.selected is not None else None
        fields = QueueFields(preset=current.preset) if current else QueueFields()

        def confirm(specs: list | None) -> None:
            if not specs:
                return
            names = ", ".join(dict.fromkeys(s.optimizer for s in specs))
            self.push_screen(ConfirmDialog(f"Queue {len(specs)} run(s) ({names}, preset "
                                           f"{specs[0].preset})?"),
                             lambda yes: yes and self._write("queue", specs))

        self.push_screen(QueueDialog(fields), confirm)

    def action_cancel(self) -> None:
        self._confirm_write("cancel")

    def action_retry(self) -> None:
        self._confirm_write("retry")

    def _confirm_write(self, action: str) -> None:
        ids = self._targets()
        if not ids:
            self.notify("no run selected", severity="warning")
            return
        listed = ", ".join(f"#{i}" for i in ids)
        self.push_screen(ConfirmDialog(f"{action.capitalize()} run(s) {listed}?"),
                         lambda yes: yes and self._write(action, ids))

    def action_export(self) -> None:
        folder = self.options.export_dir or Path.cwd()
        ids = [r.id for r in self.visible_runs()]
        self.push_screen(ExportDialog(folder / "diffbench-runs.csv", len(ids)),
                         lambda path: path and self._write("export", (path, ids)))

    @work(thread=True, group="actions", description="write to the job database")
    def _write(self, action: str, payload) -> None:
        try:
            message = perform(self.db, action, payload)
        except StorageError as error:
            self.call_from_thread(self.notify, str(error), title=action, severity="error")
            return
        self.call_from_thread(self.notify, message, title=action)
        self.call_from_thread(self.refresh_data)
