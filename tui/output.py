"""What the queue/runs/db commands share: the ``--json`` option, the database they open,
tables and JSON on stdout, notices on stderr.

Data goes to stdout (a rich table, or JSON with ``--json``); notices and progress go to
stderr. NO_COLOR (any non-empty value) turns colour off. Nothing here imports torch.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from diffbench.engine import strict_json
from diffbench.storage.states import Status

from .errors import fail

if TYPE_CHECKING:
    from rich.console import Console

    from diffbench.storage.db import Database
    from diffbench.storage.filters import RunFilter
    from diffbench.storage.runs import Run

DB_KEY = "diffbench.db_url"  # ctx.meta key the root callback fills from --db

JsonOption = Annotated[bool, typer.Option(
    "--json", help="Print JSON on stdout instead of a table.")]
STATUSES = tuple(Status)  # the state machine's names (storage.states)
StatusOption = Annotated[list[str] | None, typer.Option(
    "--status", metavar="S[,S…]", help=f"Only runs in these states ({', '.join(STATUSES)}). "
    "Default: all.", show_default=False)]


def check_status(status: list[str] | None) -> list[str] | None:
    """``--status`` values (repeated or comma-separated), each checked; None for all."""
    from .errors import require, user_errors
    from .study.plan import split_list

    wanted = split_list(status)
    with user_errors():
        for name in wanted:
            require(name in STATUSES, f"unknown status {name!r}; known: {', '.join(STATUSES)}")
    return wanted or None


def filter_option(*names: str) -> Any:
    """The ``--filter`` option (``names``: its flags, as a command's short flags allow)."""
    return typer.Option(
        *names, metavar="KEY:VALUE", show_default=False, help="Only matching runs: status:, "
        "opt:, sched:, preset:, tag:, seed:, id:, device: (a,b = either, * = any text; "
        "repeatable; the dashboard's / filter reads the same).")


def run_filter(terms: Sequence[str] | None) -> RunFilter:
    """``--filter`` terms parsed by the one grammar (`storage.filters`); `UserError` naming
    the first bad term."""
    from diffbench.storage.filters import FilterError, RunFilter

    from .errors import UserError

    try:
        return RunFilter.parse(terms or ())
    except FilterError as error:
        raise UserError(str(error)) from None


def no_color() -> bool:
    """NO_COLOR is honoured when set to anything non-empty (https://no-color.org)."""
    return bool(os.environ.get("NO_COLOR"))


def console(stderr: bool = False) -> Console:
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 200  # pipes: no cuts
    return Console(stderr=stderr, highlight=False, width=width,
                   no_color=no_color() or None)


def notice(message: str) -> None:
    """One line on stderr (never mixed with the data on stdout)."""
    console(stderr=True).print(message, markup=False)


# ----------------------------------------------------------------------------- database


@contextmanager
def database(ctx: typer.Context, *, upgrade: bool = False) -> Iterator[Database]:
    """The job database of ``--db``/``$DIFFBENCH_DB``/``<home>/diffbench.db``; storage
    errors (unknown id, refused transition, unreachable URL, schema too new) exit 2."""
    from diffbench.storage.db import StorageError, open_database

    url = ctx.find_root().meta.get(DB_KEY)
    try:
        db = open_database(url, home=ctx.find_root().obj.root, upgrade=upgrade)
    except StorageError as error:
        raise fail(str(error)) from None
    try:
        with storage_errors():
            yield db
    finally:
        db.dispose()


@contextmanager
def storage_errors() -> Iterator[None]:
    from diffbench.storage.db import StorageError

    try:
        yield
    except StorageError as error:
        raise fail(str(error)) from None


# ----------------------------------------------------------------------------- values


def plain(value: Any) -> Any:
    """``value`` as strict JSON: datetimes ISO 8601, tuples lists, NaN and ±inf as the
    strings run folders and the job database use (`engine.strict_json`): a diverged run's
    inf loss stays distinct from a missing one."""
    if isinstance(value, float):
        return strict_json.encode(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def print_json(data: Any) -> None:
    typer.echo(json.dumps(plain(data), indent=2, allow_nan=False))


def run_dict(run: Run) -> dict[str, Any]:
    """Every field of a run (the JSON of ``queue ls``/``runs show``)."""
    import dataclasses

    out = dataclasses.asdict(run)
    out["status"] = run.status.value
    return out


def fmt(value: Any) -> str:
    """A table cell."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    return str(value)


STATUS_STYLE = {Status.QUEUED: "cyan", Status.RUNNING: "yellow", Status.DONE: "green",
                Status.FAILED: "red", Status.DIVERGED: "magenta", Status.CANCELLED: "dim"}


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], *,
                title: str | None = None) -> None:
    """A rich table on stdout; a ``status`` column is coloured (unless NO_COLOR)."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for name in columns:
        table.add_column(name, justify="left" if name in ("status", "preset", "optimizer",
                                                          "schedule", "tags") else "right")
    for row in rows:
        cells = []
        for name, value in zip(columns, row, strict=True):
            text = fmt(value)
            cells.append(Text(text, style=STATUS_STYLE.get(text, "")) if name == "status"
                         else escape(text))
        table.add_row(*cells)
    console().print(table)


def t_bin(low: float, high: float) -> str:
    """A noise-level bin's name, ``t0.90-0.95``: stable across runs and exports because it
    is made of the edges (two decimals; more where two would round an edge)."""
    def edge(value: float) -> str:
        return f"{value:.2f}" if round(value, 2) == value else repr(float(value))

    return f"t{edge(low)}-{edge(high)}"


def bin_cells(prefix: str, losses: Sequence[float] | None,
              edges: Sequence[float] | None) -> dict[str, float]:
    """One cell per t-bin loss, named ``<prefix>t0.90-0.95`` (`t_bin`), or by its index
    (``<prefix>bin3``) where the run recorded no edges that fit; none without losses."""
    if losses is None:
        return {}
    names = ([t_bin(low, high) for low, high in itertools.pairwise(edges)]
             if edges is not None and len(edges) == len(losses) + 1
             else [f"bin{i}" for i in range(len(losses))])
    return {f"{prefix}{name}": loss for name, loss in zip(names, losses, strict=True)}


def flatten(mapping: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in (mapping or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class GenerationProgress:
    """A rich progress bar on stderr fed by ``generate_dataset``'s (done, total) callback.

    Rich's speed (and so the ETA) ignores the first update, so the head start of a resumed
    run does not inflate it.
    """

    def __init__(self, console: Console, total: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(
            TextColumn("trajectories"), BarColumn(), MofNCompleteColumn(),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console,
        )
        self.task = self.bar.add_task("generate", total=total)

    def __enter__(self):
        self.bar.start()
        return self.report

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def report(self, done: int, total: int) -> None:
        self.bar.update(self.task, completed=done, total=total)
