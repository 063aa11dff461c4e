"""Colours and symbols shared by the panes: one colour per optimizer, one symbol and
colour per status (the symbol keeps statuses apart without colour)."""

from __future__ import annotations

from diffbench.engine.vocabulary import optimizer_rgb
from diffbench.storage.states import Status

from ..output import STATUS_STYLE

STATUS_SYMBOL = {Status.QUEUED: "○", Status.RUNNING: "▶", Status.DONE: "✓",
                 Status.FAILED: "✗", Status.DIVERGED: "↯", Status.CANCELLED: "⊘"}
STATUS_COLOR = STATUS_STYLE

__all__ = ["STATUS_COLOR", "STATUS_SYMBOL", "optimizer_rgb", "optimizer_style"]


def optimizer_style(name: str) -> str:
    r, g, b = optimizer_rgb(name)
    return f"rgb({r},{g},{b})"
