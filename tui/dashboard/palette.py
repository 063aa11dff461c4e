"""Colours and symbols shared by the panes: one colour per optimizer, one symbol and
colour per status (the symbol keeps statuses apart without colour)."""

from __future__ import annotations

from ..output import STATUS_STYLE

STATUS_SYMBOL = {"queued": "○", "running": "▶", "done": "✓", "failed": "✗",
                 "diverged": "↯", "cancelled": "⊘"}
STATUS_COLOR = STATUS_STYLE

#: RGB per optimizer (the plots and the legend); unknown names get grey.
OPTIMIZER_RGB: dict[str, tuple[int, int, int]] = {
    "adamw": (86, 156, 214), "sgd": (190, 190, 190), "muon": (230, 90, 80),
    "soap": (110, 200, 110), "schedulefree": (240, 170, 60), "prodigy": (200, 120, 220),
}
OTHER_RGB = (150, 150, 150)


def optimizer_rgb(name: str) -> tuple[int, int, int]:
    return OPTIMIZER_RGB.get(name, OTHER_RGB)


def optimizer_style(name: str) -> str:
    r, g, b = optimizer_rgb(name)
    return f"rgb({r},{g},{b})"
