"""Terminal pictures: colormap, resampling, half-block and ASCII rows."""

from __future__ import annotations

import io

import numpy as np
import pytest
from rich.console import Console

from diffbench.tui.render import (
    HALF_BLOCK,
    NEGATIVE_RAMP,
    POSITIVE_RAMP,
    ascii_char,
    colormap,
    legend,
    render_row,
    resample,
)


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb.astype(float) @ [0.2126, 0.7152, 0.0722]


def test_colormap_is_diverging_dark_in_the_middle_light_at_the_ends():
    values = np.linspace(-1, 1, 41)
    rgb = colormap(values)
    assert rgb.dtype == np.uint8 and rgb.shape == (41, 3)
    lum = luminance(rgb)
    assert lum.argmin() == 20  # zero is the darkest
    assert np.all(np.diff(lum[:21]) < 0) and np.all(np.diff(lum[20:]) > 0)
    low, high = rgb[0], rgb[-1]
    assert low[2] > low[0] and high[0] > high[2]  # ice is bluish, fire is reddish
    np.testing.assert_array_equal(colormap([-7.0, 7.0]), colormap([-1.0, 1.0]))  # clipped


def test_resample_averages_blocks_and_never_enlarges():
    image = np.arange(16.0).reshape(4, 4)
    np.testing.assert_allclose(resample(image, 2, 2), [[2.5, 4.5], [10.5, 12.5]])
    np.testing.assert_array_equal(resample(image, 9, 9), image)
    odd = resample(np.ones((7, 5)), 3, 2)
    assert odd.shape == (3, 2)
    np.testing.assert_allclose(odd, 1.0)  # a constant stays constant


def test_ascii_ramp_separates_signs_and_strengths():
    assert ascii_char(0.0) == " "
    assert ascii_char(1.0) == POSITIVE_RAMP[-1] and ascii_char(-1.0) == NEGATIVE_RAMP[-1]
    assert ascii_char(0.5) in POSITIVE_RAMP and ascii_char(-0.5) in NEGATIVE_RAMP
    assert set(POSITIVE_RAMP[1:]).isdisjoint(NEGATIVE_RAMP[1:])
    assert all(c.isascii() for c in POSITIVE_RAMP + NEGATIVE_RAMP)


def waves(n: int = 3, size: int = 32) -> list[np.ndarray]:
    y = np.linspace(0, 2 * np.pi, size, endpoint=False)
    return [np.tile(np.sin(y + p), (size, 1)) for p in np.linspace(0, 1, n)]


def printed(text, *, color_system: str | None) -> str:
    buffer = io.StringIO()
    Console(file=buffer, color_system=color_system, width=500).print(text, crop=False)
    return buffer.getvalue()


def test_halfblock_row_is_truecolor_with_two_pixels_per_cell():
    text = render_row(waves(), columns=120, titles=["a", "b", "c"])
    lines = text.plain.split("\n")
    assert len(lines) == 1 + 16  # title + 32 pixel rows in 16 cells
    assert lines[1] == HALF_BLOCK * 32 + "  " + HALF_BLOCK * 32 + "  " + HALF_BLOCK * 32
    out = printed(text, color_system="truecolor")
    assert "38;2;" in out and "48;2;" in out  # 24-bit foreground and background SGR codes


def test_row_shrinks_to_fit_narrow_terminals():
    text = render_row(waves(4), columns=50)
    lines = text.plain.split("\n")
    assert max(len(line) for line in lines) <= 50
    assert len(lines) == 6  # (50 − 3 gaps of 2) // 4 = 11 columns → 11 pixel rows → 6 cells
    with pytest.raises(ValueError, match="too narrow"):
        render_row(waves(10), columns=30)


def test_ascii_row_uses_only_ascii_and_shows_the_sign():
    images = [np.full((8, 8), 0.9), np.full((8, 8), -0.9)]
    text = render_row(images, columns=80, ascii=True)
    assert text.plain.isascii()
    assert not text.spans  # no colour at all
    rows = text.plain.split("\n")
    assert len(rows) == 4  # 8 pixel rows, two per character cell
    left, right = rows[0][:8], rows[0][10:18]
    assert set(left) == {ascii_char(0.9)} and set(right) == {ascii_char(-0.9)}


def test_legends():
    assert legend(ascii=True, low="-1", high="+1").plain.isascii()
    bar = legend(ascii=False, low="-1", high="+1", steps=10)
    assert "48;2;" in printed(bar, color_system="truecolor")
