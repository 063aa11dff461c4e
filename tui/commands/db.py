"""`diffbench db …`: the job database's schema.

Other commands create a fresh database on first use and refuse an older one with a message
that points here; `db upgrade` is the only way to migrate an existing database. One written
by a newer diffbench is refused (exit 2).
"""

from __future__ import annotations

import typer

from ..errors import fail
from ..output import DB_KEY, JsonOption, notice, print_json

app = typer.Typer(help="The job database: schema migrations.", no_args_is_help=True,
                  rich_markup_mode="rich")


@app.command()
def upgrade(ctx: typer.Context, json_: JsonOption = False) -> None:
    """Migrate the database (--db, $DIFFBENCH_DB or <home>/diffbench.db) to this
    diffbench's schema; create it if missing."""
    _upgrade(ctx, as_json=json_)


def _upgrade(ctx: typer.Context, *, as_json: bool) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from diffbench.storage import migrations
    from diffbench.storage.db import StorageError, create_engine, resolve_url

    root = ctx.find_root()
    url = resolve_url(root.meta.get(DB_KEY), root.obj.root)
    try:
        engine = create_engine(url)
        try:
            before, after = migrations.upgrade(engine)
            shown = engine.url.render_as_string(hide_password=True)
        finally:
            engine.dispose()
    except (StorageError, SQLAlchemyError) as error:
        raise fail(f"cannot upgrade database {url!r}: {error}"
                   if isinstance(error, SQLAlchemyError) else str(error)) from None
    if as_json:
        print_json({"url": shown, "before": before, "after": after})
    elif before == after:
        notice(f"{shown} is up to date (schema revision {after})")
    else:
        notice(f"{shown}: schema revision {before or '(new)'} → {after}")
