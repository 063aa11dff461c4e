"""`diffbench report`: the study's answer in one command (`write.write_report`).

``--filter`` reads the project's one grammar (`storage.filters`; docs/REPORT.md "Filters").
Bad input (a filter it cannot read, an output folder it cannot write) exits 2 with one line
before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import user_errors
from ..output import database, filter_option, run_filter
from ..report.write import NoRuns, check_out, write_report


def report(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", metavar="DIR", help="Folder for report.md, report.html and "
        "figures/. Default: <home>/report.", show_default=False)] = None,
    filters: Annotated[list[str] | None, filter_option("--filter", "-f")] = None,
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
        run_filter(terms)
        check_out(target)
    with database(ctx) as db:
        try:
            write_report(db, target, filters=terms)
        except NoRuns as message:
            typer.echo(str(message), err=True)


