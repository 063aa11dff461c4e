"""Workers: host, device, current run and heartbeat age; a silent worker shows as dead."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from .runs_pane import duration
from .state import WorkerView

STATE_STYLE = {"alive": ("●", "green"), "dead": ("✗", "bold red"), "stopped": ("○", "dim")}
EMPTY = "no workers yet: start one with  diffbench worker  (--device cuda:0, --gpus all)"


def workers_table(workers: Sequence[WorkerView]) -> Table | Text:
    if not workers:
        return Text(EMPTY, style="dim")
    table = Table(box=None, pad_edge=False, expand=True, header_style="bold")
    for name in ("id", "state", "host", "device", "run", "heartbeat"):
        table.add_column(name, no_wrap=True, justify="right" if name == "id" else "left")
    for w in workers:
        symbol, style = STATE_STYLE[w.state]
        table.add_row(str(w.id), Text(f"{symbol} {w.state}", style=style), w.host, w.device,
                      "—" if w.run_id is None else f"#{w.run_id}", f"{duration(w.age_s)} ago")
    return table


class WorkersPane(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(Text(EMPTY, style="dim"), **kwargs)

    def show(self, workers: Sequence[WorkerView]) -> None:
        self.update(workers_table(workers))
