"""The run screen (enter on a run): one run whole, read live.

Sections: losses, step time and the event log, the resolved config, previews scrubbed over
the stored epochs, sample quality, provenance, and a failed run's traceback first. Wide
terminals show two columns; below `WIDE` columns (80×24 over SSH) one column, scrolled
(↑/↓, page keys; tab jumps to the next section). ←/→ move through the previews (the screen
scrolls to them); esc or q goes back to the runs.

Reads as the dashboard does: a daemon reader thread (`run_details.RunDetailsReader`, one
short read transaction per tick, at most one in flight) hands results to the UI thread;
a preview's bytes are read when the screen scrubs to it, and kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable
from threading import Thread
from typing import ClassVar

from rich.console import RenderableType
from rich.markup import escape
from rich.text import Text
from rich.traceback import Traceback
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from diffbench.storage.db import Database, StorageError
from diffbench.storage.workspace import Workspace

from . import run_sections as sections
from .preview import dataset_path, real_images
from .run_details import FrameImages, RunDetails, RunDetailsReader, load_frame

WIDE = 120
KEPT_FRAMES = 64  # previews kept in memory (each a few small arrays)
LEFT = (("traceback", "traceback"), ("losses", "losses"), ("steps", "step time (data / "
        "compute / optimizer)"), ("events", "events"), ("config", "config (resolved)"))
RIGHT = (("previews", "previews: generated above data"), ("quality", "sample quality"),
         ("provenance", "provenance"))


class Section(Static):
    """A bordered section whose content is drawn for its width (again on resize)."""

    def __init__(self, name: str, title: str) -> None:
        super().__init__(Text("reading…", style="dim"), id=f"section-{name}",
                         classes="run-section")
        self.border_title = title
        self.make: Callable[[int], RenderableType] | None = None

    def show(self, make: Callable[[int], RenderableType]) -> None:
        self.make = make
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        if self.make is not None:
            self.update(self.make(self.content_region.width or 76))


class RunScreen(ModalScreen[None]):
    CSS_PATH = "run_screen.tcss"
    BINDINGS: ClassVar[list[Binding]] = [
        Binding("escape,q", "close", "back", tooltip="back to the runs"),
        Binding("left", "scrub(-1)", "previews", key_display="←/→", priority=True,
                tooltip="the previous preview (→: the next)"),
        Binding("right", "scrub(1)", "next preview", show=False, priority=True),
        Binding("tab", "section(1)", "next section", tooltip="scroll to the next section"),
        Binding("shift+tab", "section(-1)", "previous section", show=False),
    ]

    def __init__(self, db: Database, workspace: Workspace, run_id: int, *,
                 refresh_s: float = 1.0, clock: Callable[[], dt.datetime] | None = None,
                 ascii: bool = False) -> None:
        super().__init__()
        self.db, self.workspace, self.run_id = db, workspace, run_id
        self.refresh_s, self.ascii = refresh_s, ascii
        self.reader = RunDetailsReader(db, run_id, clock=clock)
        self.details: RunDetails | None = None
        self.frame: int | None = None  # index into details.frames; None: follow the latest
        self.images: dict[int, FrameImages] = {}  # by sample id
        self.real: tuple | None = None  # the data set's validation row, read once
        self._reading = self._again = False
        self._section = -1

    @classmethod
    def of(cls, app, run_id: int) -> RunScreen:
        """The screen of ``run_id`` for a `DashboardApp`: its database, workspace, refresh
        interval, clock and picture mode."""
        return cls(app.db, app.workspace, run_id, refresh_s=app.options.refresh_s,
                   clock=app.options.clock, ascii=app.ascii)

    def compose(self) -> ComposeResult:
        yield Static(f"run #{self.run_id}", id="run-header")
        with VerticalScroll(id="run-body"), Container(id="run-columns"):
            for column, names in (("run-left", LEFT), ("run-right", RIGHT)):
                with Vertical(id=column, classes="run-column"):
                    for name, title in names:
                        yield Section(name, title)
        yield Footer()

    def on_mount(self) -> None:
        self.set_class(self.app.size.width < WIDE, "narrow")
        self.query_one("#run-body").focus()
        self.set_interval(self.refresh_s, self.refresh_data)
        self.refresh_data()

    def on_resize(self, event) -> None:
        self.set_class(event.size.width < WIDE, "narrow")

    # ------------------------------------------------------------------ reading

    def refresh_data(self) -> None:
        """Start a read unless one is in flight (then read again right after it)."""
        if self._reading:
            self._again = True
            return
        self._reading, self._again = True, False
        Thread(target=self._read, args=(self.frame,), name="diffbench-run-read",
               daemon=True).start()

    def _read(self, frame: int | None) -> None:
        try:
            details = self.reader.refresh()
            current = details or self.details
            real = self.real
            if current is not None and real is None:
                real = real_images(dataset_path(current.run, self.workspace))
            images = None
            if current is not None and current.frames:
                wanted = current.frames[self._index(frame, current)]
                images = self.images.get(wanted.sample_id) or load_frame(self.db, wanted, real)
            result: tuple = (self._apply, details, real, images)
        except StorageError as error:
            result = (self._failed, str(error))
        except Exception:  # a bug: end the app with the traceback, as the dashboard does
            result = (self.app.panic, Traceback())
        with contextlib.suppress(RuntimeError):  # the app exited meanwhile
            self.app.call_from_thread(*result)

    @staticmethod
    def _index(frame: int | None, details: RunDetails) -> int:
        """The frame shown: the one chosen, else the latest epoch's preview."""
        count = len(details.frames)
        if frame is not None:
            return max(0, min(frame, count - 1))
        epochs = [i for i, f in enumerate(details.frames) if f.name == "vorticity"]
        return epochs[-1] if epochs else count - 1

    def _failed(self, message: str) -> None:
        self._reading = False
        self.query_one("#run-header", Static).update(
            f"[b]run #{self.run_id}[/] · [red]{escape(message)}[/]")

    def _apply(self, details: RunDetails | None, real: tuple,
               images: FrameImages | None) -> None:
        self._reading = False
        self.real = real
        if images is not None:
            if len(self.images) >= KEPT_FRAMES:
                self.images.pop(next(iter(self.images)))
            self.images[images.frame.sample_id] = images
        if details is not None:
            self.details = details
            self._show(details)
        self._show_frame()
        if self._again:
            self.refresh_data()

    def _show(self, d: RunDetails) -> None:
        self.query_one("#run-header", Static).update(sections.header(d))
        tb = sections.traceback(d)
        box = self.query_one("#section-traceback", Section)
        box.set_class(tb is not None, "-shown")
        if tb is not None:
            box.border_title = f"traceback: {d.run.error or 'failed'}"
            box.show(lambda width: tb)
        self.query_one("#section-losses", Section).show(lambda w: sections.losses(d, w))
        self.query_one("#section-steps", Section).show(lambda w: sections.step_times(d))
        self.query_one("#section-events", Section).show(lambda w: sections.event_log(d))
        self.query_one("#section-config", Section).show(lambda w: sections.config(d, w))
        self.query_one("#section-quality", Section).show(lambda w: sections.quality(d))
        self.query_one("#section-provenance", Section).show(
            lambda w: sections.provenance(d, w))

    def _show_frame(self) -> None:
        d = self.details
        count = len(d.frames) if d else 0
        index = self._index(self.frame, d) if d and count else 0
        images = self.images.get(d.frames[index].sample_id) if d and count else None
        self.query_one("#section-previews", Section).show(
            lambda w: sections.frame(images, index, count, columns=w, ascii=self.ascii))

    # ------------------------------------------------------------------ keys

    def action_close(self) -> None:
        self.dismiss(None)

    def action_scrub(self, step: int) -> None:
        d = self.details
        if d is None or not d.frames:
            return
        index = self._index(self.frame, d) + step
        self.frame = max(0, min(index, len(d.frames) - 1))
        self._show_frame()  # at once if kept, else "reading…" until the read
        box = self.query_one("#section-previews", Section)
        self.query_one("#run-body", VerticalScroll).scroll_to_widget(box, animate=False,
                                                                     top=True)
        if d.frames[self.frame].sample_id not in self.images:
            self.refresh_data()

    def action_section(self, step: int) -> None:
        """Scroll to the next (previous) section, in reading order: the left column's,
        then the right's, which is also the one column's order on a narrow terminal."""
        shown = [s for s in self.query(Section) if s.display]
        self._section = (self._section + step) % len(shown)
        self.query_one("#run-body", VerticalScroll).scroll_to_widget(
            shown[self._section], animate=False, top=True)
