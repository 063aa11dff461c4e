"""Pictures in the terminal: rows of scalar fields as truecolor half blocks or an ASCII ramp.

Everything here takes *display values* in [−1, 1] (for vorticity, the output of
:func:`diffbench.engine.vorticity.display_vorticity`) and knows no physics.
Rows of an image are axis −2 of the array (x for the data sets), columns axis −1 (y),
as in the reference's pictures.

* Truecolor: each character cell is two pixels stacked, "▀" with the foreground colour
  = upper pixel and the background colour = lower pixel, so pixels come out about square.
* ASCII: one character per cell, two pixel rows averaged into it; negative values take
  the ramp ``,;~=oO`` and positive values ``.:+*#@`` (weak → strong), near zero is blank.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from rich.color import Color
from rich.style import Style
from rich.text import Text

# A diverging "icefire"-like colormap: light cyan → blue → near black → red → light yellow.
# (position in [0, 1], R, G, B); an approximation of seaborn's icefire, drawn by hand.
ICEFIRE: tuple[tuple[float, int, int, int], ...] = (
    (0.00, 189, 231, 219),
    (0.15, 104, 181, 214),
    (0.30, 60, 116, 191),
    (0.42, 48, 58, 110),
    (0.50, 30, 30, 33),
    (0.58, 98, 34, 52),
    (0.70, 178, 46, 52),
    (0.85, 236, 113, 62),
    (1.00, 254, 229, 182),
)

NEGATIVE_RAMP = " ,;~=oO"  # index = strength, 0 = blank
POSITIVE_RAMP = " .:+*#@"
HALF_BLOCK = "▀"


def colormap(values: np.ndarray) -> np.ndarray:
    """RGB (…, 3) uint8 for ``values`` in [−1, 1] (clipped) on the icefire-like map."""
    table = np.asarray(ICEFIRE, dtype=np.float64)
    position = (np.clip(np.asarray(values, dtype=np.float64), -1.0, 1.0) + 1.0) / 2.0
    channels = [np.interp(position, table[:, 0], table[:, i]) for i in (1, 2, 3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def _area_edges(n_in: int, n_out: int) -> np.ndarray:
    return np.floor(np.arange(n_out) * n_in / n_out).astype(np.int64)


def resample(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Shrink (or keep) a 2-D image to (rows, cols) by averaging the pixels each covers.

    Never enlarges: a target larger than the image along an axis keeps that axis.
    """
    image = np.asarray(image, dtype=np.float64)
    h, w = image.shape
    rows, cols = min(rows, h), min(cols, w)
    if (rows, cols) != (h, w):
        row_edges, col_edges = _area_edges(h, rows), _area_edges(w, cols)
        row_counts = np.diff(np.append(row_edges, h))
        col_counts = np.diff(np.append(col_edges, w))
        summed = np.add.reduceat(np.add.reduceat(image, row_edges, axis=0), col_edges, axis=1)
        image = summed / np.outer(row_counts, col_counts)
    return image


def panel_width(columns: int, panels: int, size: int, gap: int = 2) -> int:
    """Columns per panel so ``panels`` panels of a ``size``-pixel field fit in ``columns``."""
    return max(0, min(size, (columns - gap * (panels - 1)) // panels))


def _halfblock_lines(image: np.ndarray) -> list[Text]:
    rgb = colormap(image)
    lines = []
    for top in range(0, rgb.shape[0], 2):
        line = Text()
        for col in range(rgb.shape[1]):
            upper = Color.from_rgb(*map(int, rgb[top, col]))
            lower = (Color.from_rgb(*map(int, rgb[top + 1, col]))
                     if top + 1 < rgb.shape[0] else None)
            line.append(HALF_BLOCK, Style(color=upper, bgcolor=lower))
        lines.append(line)
    return lines


def ascii_char(value: float) -> str:
    """The ASCII ramp character for one display value in [−1, 1]."""
    levels = len(POSITIVE_RAMP)
    strength = min(int(abs(value) * levels), levels - 1)
    return (NEGATIVE_RAMP if value < 0 else POSITIVE_RAMP)[strength]


def _ascii_lines(image: np.ndarray) -> list[Text]:
    return [Text("".join(ascii_char(v) for v in row)) for row in image]


def render_row(
    images: Sequence[np.ndarray],
    *,
    columns: int,
    ascii: bool = False,
    titles: Sequence[str] | None = None,
    gap: int = 2,
) -> Text:
    """Lay ``images`` (each 2-D, values in [−1, 1]) side by side within ``columns``.

    Each panel is shrunk by area averaging to fit; aspect ratio is kept (a character cell
    is about twice as tall as wide, so a cell holds two pixel rows). Raises ``ValueError``
    when the terminal is too narrow for the panels.
    """
    if not images:
        raise ValueError("nothing to draw")
    h, w = images[0].shape
    cols = panel_width(columns, len(images), w, gap)
    if cols < 4:
        raise ValueError(f"{columns} columns are too narrow for {len(images)} panels; "
                         "draw fewer states or widen the terminal")
    pixel_rows = max(2, round(cols * h / w))
    if ascii:
        panels = [_ascii_lines(resample(img, pixel_rows // 2, cols)) for img in images]
    else:
        panels = [_halfblock_lines(resample(img, pixel_rows, cols)) for img in images]

    width = panels[0][0].cell_len
    out = Text()
    if titles is not None:
        out.append((" " * gap).join(t[:width].center(width) for t in titles).rstrip() + "\n")
    for lines in zip(*panels, strict=True):
        out.append_text(Text(" " * gap).join(lines))
        out.append("\n")
    out.rstrip()
    return out


def legend(*, ascii: bool, low: str, high: str, steps: int = 24) -> Text:
    """One-line key: the ramp or a colour bar from −1 to 1, labelled ``low`` … ``high``."""
    out = Text(f"{low} ")
    if ascii:
        out.append(" ".join(NEGATIVE_RAMP[:0:-1]) + "   " + " ".join(POSITIVE_RAMP[1:]))
    else:
        for value in np.linspace(-1.0, 1.0, steps):
            r, g, b = map(int, colormap(value))
            out.append(" ", Style(bgcolor=Color.from_rgb(r, g, b)))
    out.append(f" {high}")
    return out
