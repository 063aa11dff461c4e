"""`diffbench tui`: the Typer command. Textual is imported only when it runs, so
`import diffbench.tui.cli` stays light."""

from __future__ import annotations

import gc
from typing import Annotated

import typer

from ..errors import require, user_errors
from ..output import database


def tui(
    ctx: typer.Context,
    refresh: Annotated[float, typer.Option(
        "--refresh", metavar="SECONDS", help="Seconds between reads of the database.")] = 1.0,
    read_only: Annotated[bool, typer.Option(
        "--read-only", help="Disable queue, cancel, retry and export.")] = False,
    ascii: Annotated[bool, typer.Option(
        "--ascii", help="Plain ASCII: charts drawn with markers (* + x …) instead of "
        "braille, vorticity with an ASCII ramp, for terminals or fonts that draw braille "
        "badly (also with NO_COLOR or a terminal without colour).")] = False,
) -> None:
    """The live dashboard: runs, loss curves, step times, vorticity previews, workers.

    Reads the job database the workers write (the global --db, $DIFFBENCH_DB or
    <home>/diffbench.db). Keys: ? help, / filter, space mark, q quit.

    [bold]Examples[/]

      diffbench tui
      diffbench --db postgresql://host/bench tui --read-only --refresh 5
    """
    with user_errors():
        require(refresh > 0, f"--refresh must be positive, got {refresh}")
    from ..dashboard.app import DashboardApp, DashboardOptions

    with database(ctx) as db:
        DashboardApp(db, ctx.find_root().obj, DashboardOptions(
            refresh_s=refresh, read_only=read_only, ascii=ascii)).run()
    # The app leaves a large heap; exempt it from the collections Python runs while exiting
    # (about 0.5–1 s), so `q` returns to the shell at once.
    gc.freeze()
