"""The runs table: one row per run (or per group of seeds), sortable, filterable.

Rows are keyed by run id; when the order is unchanged a refresh only rewrites the cells
that changed, so a second-by-second refresh over 1,000 runs stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from .filters import COLUMNS
from .palette import STATUS_COLOR, STATUS_SYMBOL, optimizer_style
from .state import GroupView, RunView

GROUP_COLUMNS = (("optimizer", "optimizer"), ("schedule", "schedule"), ("lr", "lr"),
                 ("wd", "wd"), ("seeds", "seeds"), ("done", "done"),
                 ("final", "final loss (mean ± std)"), ("ms", "ms/step"))
BAR = 5
EMPTY = ("no runs yet: queue some with  diffbench queue add -p tiny -O adamw,muon --seeds 0-2"
         "  (or press a), then start  diffbench worker")


def number(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "—"
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return f"{value:.{digits}g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress(run: RunView) -> Text:
    total = "?" if run.epochs_total is None else str(run.epochs_total)
    done = run.epochs_total if run.status == "done" and run.epochs_total else run.epochs_done
    out = Text(f"{done}/{total} ".rjust(6))
    fraction = run.progress or 0.0
    filled = round(fraction * BAR)
    out.append("█" * filled, STATUS_COLOR.get(run.status, ""))
    out.append("░" * (BAR - filled), "dim")
    return out


def run_cells(run: RunView, marked: bool) -> tuple[Text | str, ...]:
    status = Text(f"{STATUS_SYMBOL.get(run.status, '?')} {run.status}",
                  style=STATUS_COLOR.get(run.status, ""))
    ident = Text(("●" if marked else " ") + str(run.id), style="bold" if marked else "")
    return (ident, status, Text(run.optimizer, style=optimizer_style(run.optimizer)),
            run.schedule, number(run.lr, 3), number(run.wd, 3), str(run.seed), progress(run),
            number(run.train_loss), number(run.valid_loss), number(run.ms_per_step, 3),
            duration(run.eta_s))


def group_cells(group: GroupView) -> tuple[Text | str, ...]:
    final = ("—" if group.mean is None
             else f"{number(group.mean)} ± {number(group.std, 2)}")
    return (Text(group.optimizer, style=optimizer_style(group.optimizer)), group.schedule,
            number(group.lr, 3), number(group.wd, 3), str(group.runs), str(group.done),
            final, number(group.ms_per_step, 3))


def group_key(group: GroupView) -> str:
    return f"group:{group.optimizer}:{group.schedule}:{group.lr!r}:{group.wd!r}"


class RunsPane(Vertical):
    """The table, its empty-state line and the `/` filter input."""

    class Highlighted(Message):
        """The cursor moved to a run (a group: its first run)."""

        def __init__(self, run_id: int | None) -> None:
            super().__init__()
            self.run_id = run_id

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._columns: tuple[str, ...] = ()
        self._keys: list[str] = []
        self._cells: dict[str, tuple[str, ...]] = {}
        self._group_runs: dict[str, int | None] = {}

    def compose(self) -> ComposeResult:
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(EMPTY, id="runs-empty", classes="empty")
        yield Input(placeholder="filter: text or status:running opt:muon  (enter: keep, "
                    "esc: clear)", id="filter")
        yield Static("", id="filter-error")

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs-table", DataTable)

    def show_runs(self, runs: Sequence[RunView], *, total: int, marked: set[int],
                  sort: str, reverse: bool) -> None:
        arrow = "▼" if reverse else "▲"
        labels = tuple(f"{title} {arrow}" if key == sort else title for key, title in COLUMNS)
        rows = {str(r.id): run_cells(r, r.id in marked) for r in runs}
        self._group_runs = {}
        self._fill(labels, [k for k, _ in COLUMNS], rows)
        self._empty(total, len(runs))

    def show_groups(self, groups: Sequence[GroupView], *, total: int) -> None:
        rows = {group_key(g): group_cells(g) for g in groups}
        self._group_runs = {group_key(g): (g.run_ids[0] if g.run_ids else None)
                            for g in groups}
        self._fill(tuple(t for _, t in GROUP_COLUMNS), [k for k, _ in GROUP_COLUMNS], rows)
        self._empty(total, len(groups))

    def _empty(self, total: int, shown: int) -> None:
        empty = self.query_one("#runs-empty", Static)
        if total == 0:
            empty.update(EMPTY)
        elif shown == 0:
            empty.update("no run matches the filter: press / to change it, esc to clear it")
        empty.display = shown == 0

    def _fill(self, labels: tuple[str, ...], keys: list[str],
              rows: dict[str, tuple[Text | str, ...]]) -> None:
        table = self.table
        plain = {k: tuple(str(c) for c in cells) for k, cells in rows.items()}
        if labels != self._columns or list(rows) != self._keys:
            current = self._current_key()
            table.clear(columns=labels != self._columns)
            if labels != self._columns:
                for key, label in zip(keys, labels, strict=True):
                    table.add_column(label, key=key)
            for key, cells in rows.items():
                table.add_row(*cells, key=key)
            self._columns, self._keys = labels, list(rows)
            if current in rows:
                table.move_cursor(row=self._keys.index(current), animate=False)
        else:
            for key, cells in rows.items():
                old = self._cells.get(key)
                for index, (cell, text) in enumerate(zip(cells, plain[key], strict=True)):
                    if old is None or old[index] != text:
                        table.update_cell(key, keys[index], cell)
        self._cells = plain

    def _current_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def current_run(self) -> int | None:
        key = self._current_key()
        if key is None:
            return None
        return self._group_runs.get(key) if key in self._group_runs else int(key)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self.post_message(self.Highlighted(self.current_run()))
