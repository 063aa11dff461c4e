"""Workers: host, device, current run and heartbeat age (a silent worker shows as dead), and
the load its heartbeats carry: GPU utilisation, memory and temperature, the host's CPU and
RAM, the latest values with a sparkline of the recent ones (`tui.load`; absent sensors say
so: ``—``, ``no GPU sensor``).

Where every reading fits in a column of its own, one line per worker; narrower, the load
goes on two lines under each worker. The columns are laid out here as plain text (padded
cells, one `Text`): a Rich table measures every cell of every row on each redraw, and this
pane is redrawn whenever a heartbeat arrives (≈ 80 ms for 100 workers, against ≈ 5 ms)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Span, Text
from textual.widgets import Static

from ..load import ABSENT, COLUMNS, NO_GPU, load_cells
from .content import set_content
from .runs_pane import duration
from .state import WorkerView

STATE_STYLE = {"alive": ("●", "green"), "dead": ("✗", "bold red"), "stopped": ("○", "dim")}
EMPTY = "no workers yet: start one with  diffbench worker  (--device cuda:0, --gpus all)"
BASE = ("id", "state", "host", "device", "run", "heartbeat")
RIGHT = {"id", "temp"}  # right-aligned columns
GAP = "  "


def worker_row(worker: WorkerView, wide: bool = True,
               load: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The row's cells: `BASE`, then ``load`` (default: `load_part`)."""
    symbol, _ = STATE_STYLE[worker.state]
    return (str(worker.id), f"{symbol} {worker.state}", worker.host, worker.device,
            "—" if worker.run_id is None else f"#{worker.run_id}",
            f"{duration(worker.age_s)} ago", *(load or load_part(worker, wide)))


def load_part(worker: WorkerView, wide: bool) -> tuple[str, ...]:
    """One cell per reading (``wide``) or one cell holding the load's two lines (GPU:
    sparkline, %, memory, temperature; CPU and RAM)."""
    gpu, memory, temp, cpu, ram = load_cells(worker.load, worker.device,
                                             width=8 if wide else 6)
    if wide:
        return (gpu, memory, temp, cpu, ram)
    if not worker.load:
        return ("no load reported yet",)
    gpu_line = " ".join([f"gpu: {gpu}" if gpu in (ABSENT, NO_GPU) else f"gpu {gpu}",
                         *(v for v in (memory, temp) if v != ABSENT)])
    return (f"{gpu_line}\ncpu {cpu}  ram {ram}",)


def _widths(names: Sequence[str], rows: Sequence[tuple[str, ...]]) -> list[int]:
    return [max(cell_len(r[i]) for r in (names, *rows)) for i in range(len(names))]


def line_width(rows: Sequence[tuple[str, ...]]) -> int:
    """The width of the one-line-per-worker layout of ``rows``."""
    widths = _widths((*BASE, *COLUMNS), rows)
    return sum(widths) + len(GAP) * (len(widths) - 1)


def workers_table(rows: Sequence[tuple[str, ...]]) -> Text:
    """The rows as aligned columns (the load under each worker when a row holds it in one
    cell), built as one string with a style span per state cell and load line."""
    if not rows:
        return Text(EMPTY, style="dim")
    stacked = len(rows[0]) == len(BASE) + 1
    names = BASE if stacked else (*BASE, *COLUMNS)
    widths = _widths(names, rows)
    header = GAP.join(_pad(n, w, n) for n, w in zip(names, widths, strict=True)).rstrip()
    lines, spans, at = [header], [Span(0, len(header), "bold")], len(header) + 1
    state_at = widths[0] + len(GAP)
    indent = " " * state_at
    for row in rows:
        line = GAP.join(_pad(row[i], w, n) for i, (n, w) in enumerate(
            zip(names, widths, strict=True))).rstrip()
        spans.append(Span(at + state_at, at + state_at + len(row[1]),
                          STATE_STYLE[row[1].split()[-1]][1]))
        lines.append(line)
        at += len(line) + 1
        if stacked:
            for extra in row[-1].splitlines():
                lines.append(indent + extra)
                spans.append(Span(at, at + len(lines[-1]), "dim"))
                at += len(lines[-1]) + 1
    return Text("\n".join(lines), spans=spans, no_wrap=True, overflow="ellipsis")


def _pad(text: str, width: int, name: str) -> str:
    space = " " * (width - cell_len(text))
    return space + text if name in RIGHT else text + space


def _height(rows: Sequence[tuple[str, ...]]) -> int:
    return sum(1 + (r[-1].count("\n") + 1 if len(r) == len(BASE) + 1 else 0) for r in rows)


class WorkersPane(Static):
    """Redrawn only when a row's text changed (a heartbeat age shown to the second, a new
    load sample) or the pane's width changed the layout."""

    def __init__(self, **kwargs) -> None:
        super().__init__(Text(EMPTY, style="dim"), **kwargs)
        self._rows: tuple[tuple[str, ...], ...] | None = None
        self._workers: Sequence[WorkerView] = ()
        self._loads: dict[tuple[int, bool], tuple[object, tuple[str, ...]]] = {}

    def _load(self, worker: WorkerView, wide: bool) -> tuple[str, ...]:
        """`load_part`, formatted again only when the worker's newest sample changed."""
        newest = worker.load[-1] if worker.load else None
        cached = self._loads.get((worker.id, wide))
        if cached is None or cached[0] is not newest:
            cached = self._loads[worker.id, wide] = (newest, load_part(worker, wide))
        return cached[1]

    def show(self, workers: Sequence[WorkerView]) -> None:
        self._workers = workers
        rows = tuple(worker_row(w, True, self._load(w, True)) for w in workers)
        width = self.content_region.width - 2  # a scrollbar's columns when it scrolls
        if rows and width > 0 and line_width(rows) > width:
            rows = tuple(worker_row(w, False, self._load(w, False)) for w in workers)
        if rows != self._rows:
            layout = self._rows is None or _height(rows) != _height(self._rows)
            self._rows = rows
            set_content(self, workers_table(rows), layout=layout)

    def on_resize(self) -> None:
        self.show(self._workers)
