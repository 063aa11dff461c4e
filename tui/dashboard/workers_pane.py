"""Workers: host, device, current run and heartbeat age; a silent worker shows as dead."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from .content import set_content
from .runs_pane import duration
from .state import WorkerView

STATE_STYLE = {"alive": ("●", "green"), "dead": ("✗", "bold red"), "stopped": ("○", "dim")}
EMPTY = "no workers yet: start one with  diffbench worker  (--device cuda:0, --gpus all)"


def worker_row(worker: WorkerView) -> tuple[str, ...]:
    symbol, _ = STATE_STYLE[worker.state]
    return (str(worker.id), f"{symbol} {worker.state}", worker.host, worker.device,
            "—" if worker.run_id is None else f"#{worker.run_id}",
            f"{duration(worker.age_s)} ago")


def workers_table(rows: Sequence[tuple[str, ...]]) -> Table | Text:
    if not rows:
        return Text(EMPTY, style="dim")
    table = Table(box=None, pad_edge=False, expand=True, header_style="bold")
    for name in ("id", "state", "host", "device", "run", "heartbeat"):
        table.add_column(name, no_wrap=True, justify="right" if name == "id" else "left")
    for ident, state, *rest in rows:
        table.add_row(ident, Text(state, style=STATE_STYLE[state.split()[-1]][1]), *rest)
    return table


class WorkersPane(Static):
    """Redrawn only when a row's text changed (a heartbeat age shown to the second)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(Text(EMPTY, style="dim"), **kwargs)
        self._rows: tuple[tuple[str, ...], ...] | None = None

    def show(self, workers: Sequence[WorkerView]) -> None:
        rows = tuple(worker_row(w) for w in workers)
        if rows != self._rows:
            layout = self._rows is None or len(rows) != len(self._rows)
            self._rows = rows
            set_content(self, workers_table(rows), layout=layout)
