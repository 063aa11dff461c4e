"""Workers: host, device, current run and heartbeat age (a silent worker shows as dead), and
the load its heartbeats carry: GPU utilisation, memory and temperature, the host's CPU and
RAM, the latest values with a sparkline of the recent ones (`tui.load`; absent sensors say
so: ``—``, ``no GPU sensor``).

Where every reading fits in a column of its own, one line per worker; narrower, the load
goes on two lines under each worker. The pane is redrawn whenever a heartbeat arrives, so it
draws through Textual's line API (a `ScrollView`): the columns are padded text, each line is
rendered when it is on screen and again only when its text changed. As one Rich table (or one
`Static`) every redraw measured and rendered all the workers' rows: ≈ 80 ms for 100.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from rich.text import Span, Text
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ..load import ABSENT, COLUMNS, NO_GPU, load_cells
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


Line = tuple[str, tuple[tuple[int, int, str], ...]]  # its text, and (start, end, style)s


def workers_lines(rows: Sequence[tuple[str, ...]]) -> list[Line]:
    """The rows as aligned columns (the load under each worker when a row holds it in one
    cell), one `Line` per screen line."""
    if not rows:
        return [(EMPTY, ((0, len(EMPTY), "dim"),))]
    stacked = len(rows[0]) == len(BASE) + 1
    names = BASE if stacked else (*BASE, *COLUMNS)
    widths = _widths(names, rows)
    header = GAP.join(_pad(n, w, n) for n, w in zip(names, widths, strict=True)).rstrip()
    lines: list[Line] = [(header, ((0, len(header), "bold"),))]
    at = widths[0] + len(GAP)  # where the state column starts
    for row in rows:
        line = GAP.join(_pad(row[i], w, n) for i, (n, w) in enumerate(
            zip(names, widths, strict=True))).rstrip()
        lines.append((line, ((at, at + len(row[1]), STATE_STYLE[row[1].split()[-1]][1]),)))
        if stacked:
            for extra in row[-1].splitlines():
                text = " " * at + extra
                lines.append((text, ((0, len(text), "dim"),)))
    return lines


def _pad(text: str, width: int, name: str) -> str:
    space = " " * (width - cell_len(text))
    return space + text if name in RIGHT else text + space


class WorkersPane(ScrollView):
    """Shows `workers_lines`; a line is rendered when it is on screen and again only when its
    text changed (a heartbeat age shown to the second, a new load sample). Not focusable,
    as the `Static` it replaces: the keys stay the runs table's."""

    DEFAULT_CSS = "WorkersPane { overflow-x: hidden; }"
    can_focus = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._rows: tuple[tuple[str, ...], ...] | None = None
        self._workers: Sequence[WorkerView] = ()
        self._loads: dict[tuple[int, bool], tuple[object, tuple[str, ...]]] = {}
        self._lines: list[Line] = workers_lines(())
        self._strips: dict[int, Strip] = {}

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
        width = self.size.width - 2  # a scrollbar's columns when it scrolls
        if rows and width > 0 and line_width(rows) > width:
            rows = tuple(worker_row(w, False, self._load(w, False)) for w in workers)
        if rows == self._rows:
            return
        self._rows = rows
        old, self._lines = self._lines, workers_lines(rows)
        top = self.scroll_offset.y
        for index, line in enumerate(self._lines):
            if index >= len(old) or old[index] != line:
                self._strips.pop(index, None)
                if top <= index < top + self.size.height:  # on screen: draw it again
                    self.refresh_line(index)
        for index in range(len(self._lines), len(old)):
            self._strips.pop(index, None)
        self.virtual_size = Size(max(cell_len(text) for text, _ in self._lines),
                                 len(self._lines))
        if len(old) != len(self._lines):
            self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index, width, style = scroll_y + y, self.size.width, self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, style)
        strip = self._strips.get(index)
        if strip is None:
            plain, spans = self._lines[index]
            text = Text(plain, spans=[Span(*span) for span in spans], no_wrap=True)
            text.stylize_before(style)
            strip = self._strips[index] = Strip(text.render(self.app.console), cell_len(plain))
        return strip.crop_extend(scroll_x, scroll_x + width, style).apply_offsets(scroll_x, index)

    def on_resize(self) -> None:
        self._strips.clear()
        self.show(self._workers)
