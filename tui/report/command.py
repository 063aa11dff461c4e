"""`diffbench report`: the study's answer in one command (`write.write_report`).

Filters (``--filter``, repeatable): ``key:value`` with keys preset, opt (or optimizer),
schedule, tag and status; ``opt:adamw,muon`` or a repeated key means either, different
keys must all hold. Bad input (a filter it cannot read, an output folder it cannot write)
exits 2 with one line before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import user_errors
from ..output import database

if TYPE_CHECKING:


    pass


from .write import NoRuns, check_filters, check_out, write_report


def report(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Folder for report.md, report.html and "
        "figures/. Default: <home>/report.", show_default=False)] = None,
    filters: Annotated[list[str] | None, typer.Option(
        "--filter", "-f", metavar="KEY:VALUE", help="Only these runs: preset:, opt:, "
        "schedule:, tag:, status: (repeatable; a,b = either).", show_default=False)] = None,
) -> None:
    """Compare optimizers and schedules: the best setting of each, mean ± std over seeds,
    % against AdamW, step-time ratio, time to AdamW's loss, sample quality, the paper's
    figures beside ours.

    [bold]Examples[/]

      diffbench report
      diffbench report --out results/ --filter preset:tiny --filter opt:adamw,muon
    """
    terms = list(filters or ())
    target = out if out is not None else ctx.find_root().obj.root / "report"
    with user_errors():
        check_filters(terms)
        check_out(target)
    with database(ctx) as db:
        try:
            write_report(db, target, filters=terms)
        except NoRuns as message:
            typer.echo(str(message), err=True)


