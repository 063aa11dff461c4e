"""The runs table: one row per run (or per group of seeds), sortable, filterable.

A second-by-second refresh over 1,000 runs stays cheap: only the rows of runs that changed
are formatted again, and only their changed cells are written to the table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import DataTable, Input, Static

from .content import set_content
from .palette import STATUS_COLOR, STATUS_SYMBOL, optimizer_style
from .sorting import COLUMNS
from .state import GroupView, RunView

GROUP_COLUMNS = (("preset", "preset·epochs"), ("optimizer", "optimizer"),
                 ("schedule", "schedule"), ("lr", "lr"),
                 ("wd", "wd"), ("seeds", "seeds"), ("done", "done"),
                 ("final", "final loss (mean ± std)"), ("ms", "ms/step"))
BAR = 5
# left out in this order when space is short (the last step's train loss is the noisiest
# number of the row; the ETA matters only while running)
OPTIONAL = ("wd", "seed", "lr", "schedule", "train", "eta")
SCROLLBAR = 2
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
            number(run.train_loss), number(run.fixed_valid_loss), number(run.ms_per_step, 3),
            duration(run.eta_s))


def group_cells(group: GroupView, marked: bool = False) -> tuple[Text | str, ...]:
    final = ("—" if group.mean is None else number(group.mean) if group.std is None
             else f"{number(group.mean)} ± {number(group.std, 2)}")
    epochs = "?" if group.epochs is None else str(group.epochs)
    return (Text(f"{'●' if marked else ''}{group.preset}·{epochs}",
                 style="bold" if marked else ""),
            Text(group.optimizer, style=optimizer_style(group.optimizer)), group.schedule,
            number(group.lr, 3), number(group.wd, 3), str(group.runs), str(group.done),
            final, number(group.ms_per_step, 3))


def group_key(group: GroupView) -> str:
    return (f"group:{group.preset}:{group.epochs}:{group.optimizer}:{group.schedule}:"
            f"{group.lr!r}:{group.wd!r}")


class RunsPane(Vertical):
    """The table, its empty-state line and the `/` filter input.

    Rows are keyed by run id. A refresh reuses the cells of every run whose `RunView` is the
    same object as last time (the reader rebuilds only changed runs), and when the order is
    unchanged it only rewrites the cells that changed. When the columns are wider than the
    pane (80 columns over SSH), wd, seed, lr, schedule, train and ETA are left out, in that
    order, until the rest fits."""

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
        self._run_rows: dict[int, _Row] = {}
        self._widths = [len(title) for _, title in COLUMNS]  # widest cell per column
        self._shown: tuple | None = None  # the last show_runs arguments, for a resize

    def compose(self) -> ComposeResult:
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static(EMPTY, id="runs-empty", classes="empty")
        yield Input(placeholder="filter: text or status:running opt:muon  (enter: keep, "
                    "esc: clear)", id="filter")
        yield Static("", id="filter-error")

    @property
    def table(self) -> DataTable:
        return self.query_one("#runs-table", DataTable)

    def _fit(self, rows: int) -> tuple[int, ...]:
        """The indices of the columns that fit the pane: all, or without the `OPTIONAL`
        ones, in order, until the rest (padded, one with the sort arrow, and the scrollbar
        if ``rows`` overflow) fits."""
        width, height = self.content_size
        if not width:  # not laid out yet
            return tuple(range(len(COLUMNS)))
        room = width - 2 - (SCROLLBAR if rows >= height - 1 else 0)
        shown = [i for i, _ in enumerate(COLUMNS)]
        for key in OPTIONAL:
            if sum(self._widths[i] + 2 for i in shown) <= room:
                break
            shown.remove(next(i for i in shown if COLUMNS[i][0] == key))
        return tuple(shown)

    def columns(self) -> list[str]:
        """The keys of the columns shown (what `s` cycles through)."""
        shown = self._shown[-1] if self._shown is not None else range(len(COLUMNS))
        return [COLUMNS[i][0] for i in shown]

    def show_runs(self, runs: Sequence[RunView], *, total: int, marked: set[int],
                  sort: str, reverse: bool) -> None:
        previous, rows = self._run_rows, {}
        for run in runs:
            row = previous.get(run.id)
            is_marked = run.id in marked
            if row is None or row.view is not run or row.marked != is_marked:
                row = _Row(run, is_marked, str(run.id), run_cells(run, is_marked))
                self._widths = [max(w, len(t)) for w, t in zip(self._widths, row.plain,
                                                                strict=True)]
            rows[run.id] = row
        self._run_rows = rows
        shown = self._fit(len(runs))
        self._shown = (runs, total, frozenset(marked), sort, reverse, shown)
        arrow = "▼" if reverse else "▲"
        labels = tuple(f"{COLUMNS[i][1]} {arrow}" if COLUMNS[i][0] == sort else COLUMNS[i][1]
                       for i in shown)
        self._group_runs = {}
        self._fill(labels, [COLUMNS[i][0] for i in shown],
                   {row.key: row.select(shown) for row in rows.values()})
        self._empty(total, len(runs))

    def show_groups(self, groups: Sequence[GroupView], *, total: int,
                    marked: set[int] | frozenset[int] = frozenset()) -> None:
        """One row per setting; ● before a setting whose seeds are marked."""
        rows = {}
        for group in groups:
            cells = group_cells(group, bool(marked & set(group.run_ids)))
            rows[group_key(group)] = (cells, tuple(str(c) for c in cells))
        self._group_runs = {group_key(g): (g.run_ids[0] if g.run_ids else None)
                            for g in groups}
        self._shown = None
        self._fill(tuple(t for _, t in GROUP_COLUMNS), [k for k, _ in GROUP_COLUMNS], rows)
        self._empty(total, len(groups))

    def on_resize(self) -> None:
        if self._shown is not None and self._shown[-1] != self._fit(len(self._shown[0])):
            runs, total, marked, sort, reverse, _ = self._shown
            self.show_runs(runs, total=total, marked=set(marked), sort=sort,
                           reverse=reverse)

    def _empty(self, total: int, shown: int) -> None:
        empty = self.query_one("#runs-empty", Static)
        if total == 0:
            set_content(empty, EMPTY)
        elif shown == 0:
            set_content(empty, "no run matches the filter: press / to change it, esc to "
                        "clear it")
        if empty.display != (shown == 0):
            empty.display = shown == 0

    def _fill(self, labels: tuple[str, ...], keys: list[str],
              rows: dict[str, tuple[tuple[Text | str, ...], tuple[str, ...]]]) -> None:
        """Show ``rows`` (key → (cells, their plain text)): rebuilt when the columns or the
        order changed, else only the cells whose text changed."""
        table = self.table
        if labels != self._columns or list(rows) != self._keys:
            current = self._current_key()
            table.clear(columns=labels != self._columns)
            if labels != self._columns:
                for key, label in zip(keys, labels, strict=True):
                    table.add_column(label, key=key)
            for key, (cells, _) in rows.items():
                table.add_row(*cells, key=key)
            self._columns, self._keys = labels, list(rows)
            if current in rows:
                table.move_cursor(row=self._keys.index(current), animate=False)
        else:
            for key, (cells, plain) in rows.items():
                old = self._cells.get(key)
                if old is plain:
                    continue
                for index, (cell, text) in enumerate(zip(cells, plain, strict=True)):
                    if old is None or old[index] != text:
                        table.update_cell(key, keys[index], cell, update_width=True)
        self._cells = {key: plain for key, (_, plain) in rows.items()}

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


class _Row:
    """A run's cells, kept while its `RunView` (compared by identity) and mark stay."""

    __slots__ = ("cells", "key", "marked", "plain", "selections", "view")

    def __init__(self, view: RunView, marked: bool, key: str,
                 cells: tuple[Text | str, ...]) -> None:
        self.view, self.marked, self.key, self.cells = view, marked, key, cells
        self.plain = tuple(str(c) for c in cells)
        self.selections: dict[tuple[int, ...], tuple] = {}

    def select(self, shown: tuple[int, ...]) -> tuple[tuple[Text | str, ...], tuple[str, ...]]:
        """The cells (and their text) of the ``shown`` columns, the same tuples each time."""
        if shown not in self.selections:
            self.selections[shown] = (tuple(self.cells[i] for i in shown),
                                      tuple(self.plain[i] for i in shown))
        return self.selections[shown]
