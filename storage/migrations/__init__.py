"""Schema revisions (Alembic), applied from code: no ``alembic.ini`` needed.

`ensure_current` is what `open_database` calls; `upgrade` is ``diffbench db upgrade``.
The revision files live in ``versions/``; a new one is written with::

    alembic -c /dev/null -x url=sqlite:///scratch.db revision --autogenerate -m "…"

(run from this directory: `script_location` is set in code, see `_config`), then reviewed
by hand. Revision ids are short and ordered: ``0001``, ``0002``, …
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from diffbench.storage.db import SchemaOutdated, SchemaTooNew, StorageError, describe

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "alembic_version"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision this code knows."""
    heads = ScriptDirectory.from_config(_config()).get_heads()
    if len(heads) != 1:
        raise StorageError(f"migrations have {len(heads)} heads: {heads}")
    return heads[0]


def known_revisions() -> frozenset[str]:
    script = ScriptDirectory.from_config(_config())
    return frozenset(rev.revision for rev in script.walk_revisions())


def current(connection: Connection) -> str | None:
    """The database's revision, None for a database Alembic never touched."""
    return MigrationContext.configure(connection).get_current_revision()


def _check(connection: Connection, *, upgrade: bool, url: str) -> bool:
    """Whether the database must be upgraded; raises if it may not be."""
    revision = current(connection)
    if revision is None:
        tables = set(sa.inspect(connection).get_table_names()) - {VERSION_TABLE}
        if tables:
            raise StorageError(f"{url} is not a diffbench database (it has tables "
                               f"{', '.join(sorted(tables))} but no schema revision)")
        return True
    if revision not in known_revisions():
        raise SchemaTooNew(f"{url} has schema revision {revision}, newer than this "
                           f"diffbench knows (head {head()}); upgrade diffbench")
    if revision != head():
        if not upgrade:
            raise SchemaOutdated(f"{url} has schema revision {revision}, this diffbench "
                                 f"needs {head()}: run `diffbench db upgrade`")
        return True
    return False


#: The PostgreSQL advisory lock (any constant) held while checking and migrating.
MIGRATION_LOCK = 0x646966666265  # "diffbe"


def ensure_current(engine: Engine, *, upgrade: bool = False) -> None:
    """Check the schema; migrate a fresh database (or any older one with ``upgrade``).

    The check and the migration share one transaction that holds the database's write
    lock (``BEGIN IMMEDIATE`` on SQLite, a transaction-level advisory lock on PostgreSQL),
    so several workers opening a fresh database at once migrate it exactly once.
    """
    url = engine.url.render_as_string(hide_password=True)
    postgres = engine.dialect.name == "postgresql"
    bind = engine.execution_options(sqlite_begin="IMMEDIATE") \
        if engine.dialect.name == "sqlite" else engine
    try:
        with engine.connect() as connection:
            if not _check(connection, upgrade=True, url=url):
                return  # at head: the common case, one read
        with bind.begin() as connection:
            if postgres:
                connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK)))
            if _check(connection, upgrade=upgrade, url=url):
                command.upgrade(_config(connection), "head")
    except SQLAlchemyError as error:
        raise StorageError(f"cannot use database {url}: {describe(error)}") from error


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate to the head (``diffbench db upgrade``); (revision before, revision after)."""
    with engine.connect() as connection:
        before = current(connection)
    ensure_current(engine, upgrade=True)
    with engine.connect() as connection:
        return before, current(connection) or head()
