"""Updating a Static only when what it shows changed.

`Static.update` lays out the whole screen again by default, which costs more than the rest
of a refresh together; panes refresh every second, mostly with unchanged text.
"""

from __future__ import annotations

from rich.console import RenderableType
from rich.text import Text
from textual.widgets import Static


def _lines(content: object) -> int | None:
    """The number of lines of text or markup (None for other renderables)."""
    return str(content).count("\n") if isinstance(content, str | Text) else None


def set_content(widget: Static, content: RenderableType, *, layout: bool | None = None
                ) -> None:
    """Show ``content`` unless it is shown already. Lay out again when ``layout``, or by
    default when its height may change (text with another number of lines, or a table)."""
    old = widget.content
    if old == content:
        return
    if layout is None:
        lines = _lines(content)
        layout = lines is None or lines != _lines(old)
    widget.update(content, layout=layout)
