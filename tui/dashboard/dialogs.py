"""Modal screens: a yes/no confirmation, the queue form, the export path, the key help.
Each returns its answer through `dismiss` (None: cancelled)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from diffbench.storage.filters import __doc__ as FILTER_HELP

from .forms import FormError, QueueFields, specs_from_fields


class ConfirmDialog(ModalScreen[bool]):
    """``message`` and y / n (enter confirms, esc declines)."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("y,enter", "answer(True)", "yes"),
                Binding("n,escape", "answer(False)", "no")]

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.message, id="confirm-message")
            yield Static("[b]y[/]/enter: yes   [b]n[/]/esc: no", classes="dialog-keys")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class QueueDialog(ModalScreen[list | None]):
    """Fields of `queue add`; enter validates (the CLI's checks) and returns the specs."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "cancel")]
    FIELDS = (("preset", "preset (tiny, small, paper or a .toml path)"),
              ("optimizers", "optimizers, comma-separated"),
              ("schedules", "schedules, comma-separated"),
              ("lrs", "learning rates (empty: the preset's best)"),
              ("wds", "weight decays (empty: the preset's best)"),
              ("seeds", "seeds (0-2 or 0,3)"),
              ("epochs", "epochs (empty: the preset's)"))

    def __init__(self, fields: QueueFields) -> None:
        super().__init__()
        self.fields = fields

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="queue-dialog"):
            yield Label("[b]Queue runs[/]  (tab: next field, enter: check and queue, esc: "
                        "cancel)")
            for name, label in self.FIELDS:
                yield Label(label)
                yield Input(getattr(self.fields, name), id=f"field-{name}")
            yield Static("", id="form-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        values = QueueFields(**{name: self.query_one(f"#field-{name}", Input).value
                                for name, _ in self.FIELDS})
        try:
            specs = specs_from_fields(values)
        except FormError as error:
            self.query_one("#form-error", Static).update(f"[red]{error}[/]")
            return
        self.dismiss(specs)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ExportDialog(ModalScreen[Path | None]):
    """The CSV path for the table's runs; enter writes, esc cancels."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, default: Path, count: int) -> None:
        super().__init__()
        self.default, self.count = default, count

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"[b]Export {self.count} runs to CSV[/]  (enter: write, esc: cancel)")
            yield Input(str(self.default), id="export-path")
            yield Static("", id="export-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        path = Path(event.value).expanduser()
        problem = ("give a file name" if not event.value.strip() else
                   f"{path} is a directory" if path.is_dir() else
                   f"{path.parent} does not exist" if not path.parent.is_dir() else None)
        if problem:
            self.query_one("#export-error", Static).update(f"[red]{problem}[/]")
            return
        self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """The keys (from the app's bindings) and the filter syntax."""

    BINDINGS: ClassVar[list[Binding]] = [Binding("escape,question_mark,q", "close", "close")]

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__()
        self.keys = keys

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, description in self.keys:
            table.add_row(key, description)
        with Vertical(classes="dialog", id="help"):
            yield Label("[b]Keys[/]   (esc or ? closes)")
            yield Static(table)
            yield Static(FILTER_HELP.split("\n\n", 1)[1].strip(), id="filter-help")

    def action_close(self) -> None:
        self.dismiss(None)
