"""Vorticity preview: the selected run's latest generated window (a row of snapshots)
over real validation states, as truecolor half blocks (`tui.render`) or an ASCII ramp."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..render import legend, render_row
from .preview import Pictures

NO_RUN = "no run selected: the preview shows a run's latest generated samples"


def picture_text(pictures: Pictures | None, *, columns: int, ascii: bool) -> Text:
    """Both rows (generated above real) within ``columns``, or what to do instead."""
    if pictures is None:
        return Text(NO_RUN, style="dim")
    out = Text()
    rows = []
    if pictures.generated:
        rows.append((f"generated, run #{pictures.run_id} after epoch {pictures.epoch}",
                     pictures.generated))
    else:
        out.append(f"no samples of run #{pictures.run_id} yet: the worker stores one every "
                   "train.samples_every epochs\n", "dim")
    if pictures.real:
        rows.append((f"validation ({pictures.real_source})", pictures.real))
    else:
        out.append(f"no real snapshots: {pictures.real_source} "
                   "(diffbench data generate makes it)\n", "dim")
    for title, images in rows:
        out.append(title + "\n", "bold")
        try:
            out.append_text(render_row(list(images), columns=columns, ascii=ascii,
                                       titles=[f"t{i}" for i in range(len(images))]))
        except ValueError as error:  # narrower than five panels
            out.append(str(error), "dim")
        out.append("\n")
    if rows:
        out.append_text(legend(ascii=ascii, low="−1.25", high="+1.25", steps=16))
    return out


class VorticityPane(Static):
    """Re-renders on resize (the panels shrink to the width)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(NO_RUN, **kwargs)
        self.pictures: Pictures | None = None
        self.ascii = False

    def show(self, pictures: Pictures | None, *, ascii: bool) -> None:
        if (pictures, ascii) == (self.pictures, self.ascii):
            return
        self.pictures, self.ascii = pictures, ascii
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        width = self.content_region.width or 80
        self.update(picture_text(self.pictures, columns=width, ascii=self.ascii))
