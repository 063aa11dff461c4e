"""Job databases for the storage tests: a SQLite file, or a fresh PostgreSQL database on the
server that ``$DIFFBENCH_TEST_POSTGRES_URL`` names (`bash .ci/postgres CMD` starts a
throwaway one; CI does). Without that variable the PostgreSQL cases skip, saying so."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from diffbench.storage.db import normalize_url

ENV_VAR = "DIFFBENCH_TEST_POSTGRES_URL"
SKIP_REASON = (f"PostgreSQL tests need a server: ${ENV_VAR} is not set "
               "(bash .ci/postgres .venv/bin/python -m pytest … starts a throwaway one)")
KINDS = ("sqlite", "postgresql")


def server_url() -> str:
    """The test server's URL (an existing database to connect to); skips the test if unset."""
    url = os.environ.get(ENV_VAR, "").strip()
    if not url:
        pytest.skip(SKIP_REASON)
    return url


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards; its URL, in the same
    form as the server's (``postgresql://…``: the driverless form users type)."""
    admin_url = server_url()
    name = f"diffbench_test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield sa.make_url(admin_url).set(database=name).render_as_string(
                hide_password=False)
        finally:
            with admin.connect() as connection:  # FORCE: ends sessions a test left open
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


@contextmanager
def database_url(kind: str, folder: Path) -> Iterator[str]:
    """A URL of an empty job database of ``kind`` (one of `KINDS`)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder / 'jobs.db'}"
    else:
        with fresh_postgres() as url:
            yield url
