"""The job database: one engine factory, one session per operation, domain errors.

`open_database` is the only way in: it resolves the URL (an explicit one beats
``$DIFFBENCH_DB``, which beats ``<home>/diffbench.db``), builds the engine with the
concurrency settings, and checks the schema revision: a fresh database is migrated to the
head automatically, an older one only when asked (``diffbench db upgrade``), and one
written by a newer diffbench is refused with a `SchemaTooNew`.

SQLite settings, applied to every connection: WAL (readers never block the writer, so the
TUI reads while workers write), a busy timeout (writers wait instead of failing), foreign
keys on. Pysqlite's own transaction handling is switched off and transactions are begun
explicitly: ``BEGIN IMMEDIATE`` for writing sessions, so a read-then-write transaction takes
the write lock up front and never fails half way with "database is locked"; plain
``BEGIN`` for reading sessions.

PostgreSQL (one database for workers on several machines): ``postgresql://`` and
``postgres://`` URLs mean psycopg 3 (the ``postgres`` extra), not SQLAlchemy's default
psycopg2; a driver named in the URL (``postgresql+psycopg2://``) is kept. Connections time
out after `CONNECT_TIMEOUT_S` unless the URL sets ``connect_timeout``. Read-then-write
functions of `storage.queue` lock the rows they change (``SELECT … FOR UPDATE``, claims
``SKIP LOCKED``), which is what ``BEGIN IMMEDIATE`` gives them on SQLite.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from diffbench.storage.errors import StorageError

ENV_VAR = "DIFFBENCH_DB"
FILENAME = "diffbench.db"
BUSY_TIMEOUT_MS = 30_000
CONNECT_TIMEOUT_S = 10
POSTGRES_DRIVER = "postgresql+psycopg"


class NotFound(StorageError):
    """No run (or worker) with that id."""


class SchemaTooNew(StorageError):
    """The database was written by a newer diffbench."""


class SchemaOutdated(StorageError):
    """The database needs `diffbench db upgrade`."""


def default_url(home: str | os.PathLike[str] | None = None) -> str:
    """``sqlite:///<home>/diffbench.db`` for the workspace ``home`` (see `Workspace`)."""
    from diffbench.storage.workspace import Workspace

    return f"sqlite:///{Workspace.resolve(home).root / FILENAME}"


def resolve_url(url: str | None = None, home: str | os.PathLike[str] | None = None) -> str:
    """An explicit ``url`` (``--db``) beats ``$DIFFBENCH_DB``, which beats the workspace file."""
    return url or os.environ.get(ENV_VAR) or default_url(home)


def _is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def normalize_url(url: str) -> URL:
    """``url`` parsed, with a driverless PostgreSQL URL pointed at psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername=POSTGRES_DRIVER)
    return parsed


def describe(error: BaseException) -> str:
    """A database error in one line, without SQLAlchemy's SQL echo and help link: the
    driver's own message (e.g. psycopg's "connection failed: …") where there is one."""
    cause = getattr(error, "orig", None) if isinstance(error, DBAPIError) else None
    text = str(cause if cause is not None and str(cause).strip() else error)
    text = text.split("\n(Background on this error", 1)[0].split("\n[SQL:", 1)[0]
    return " ".join(text.split())


def create_engine(url: str, *, echo: bool = False) -> Engine:
    """An engine for any SQLAlchemy URL, with the concurrency settings for SQLite.

    A SQLite file's directory is created if missing; in-memory SQLite is refused (each
    connection would see its own empty database).
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        connect_args = {} if "connect_timeout" in parsed.query \
            else {"connect_timeout": CONNECT_TIMEOUT_S}
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True,
                                connect_args=connect_args)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(parsed, echo=echo, pool_pre_ping=True)
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file::memory:"):
        raise StorageError("an in-memory SQLite database cannot be shared; give a file path")
    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, echo=echo,
                              connect_args={"timeout": BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())

    return engine


def _hide_password(url: str) -> str:
    try:
        return repr(make_url(url).render_as_string(hide_password=True))
    except (SQLAlchemyError, ValueError):  # not even a URL: say what was given
        return repr(url)


@dataclass(frozen=True)
class Database:
    """An engine and its session factory. Cheap to pass around; `dispose` when done."""

    engine: Engine

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """One unit of work: commit on success, roll back on any error, always close.

        SQLAlchemy errors come out as `StorageError` (domain errors pass unchanged).
        ``write=True`` takes SQLite's write lock at the start of the transaction.
        """
        bind = self.engine
        if write and _is_sqlite(bind):
            bind = bind.execution_options(sqlite_begin="IMMEDIATE")
        session = sessionmaker(bind=bind, expire_on_commit=False)()
        try:
            yield session
            session.commit()
        except SQLAlchemyError as error:
            session.rollback()
            raise StorageError(f"database error ({self.url}): {describe(error)}") from error
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(url: str | None = None, *, home: str | os.PathLike[str] | None = None,
                  upgrade: bool = False, echo: bool = False) -> Database:
    """The database at ``url`` (see `resolve_url`), checked against this code's schema.

    A fresh (empty) database is migrated to the head; an older one only with
    ``upgrade=True`` (else `SchemaOutdated`); a newer one raises `SchemaTooNew`.
    """
    from diffbench.storage import migrations

    resolved = resolve_url(url, home)
    try:
        engine = create_engine(resolved, echo=echo)
    except ImportError as error:  # the URL's driver is not installed
        hint = " (pip install 'diffbench[postgres]')" \
            if getattr(error, "name", None) == "psycopg" else ""
        raise StorageError(f"cannot open database {_hide_password(resolved)}: "
                           f"{error}{hint}") from error
    except (SQLAlchemyError, OSError, ValueError) as error:
        raise StorageError(f"cannot open database {_hide_password(resolved)}: "
                           f"{describe(error)}") from error
    try:
        migrations.ensure_current(engine, upgrade=upgrade)
    except BaseException:
        engine.dispose()
        raise
    return Database(engine)
