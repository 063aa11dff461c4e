"""The engine factory, the schema revision check and migrations, on real SQLite files and
(where tests/postgres_db.py has a server) real PostgreSQL databases."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from diffbench.storage import migrations
from diffbench.storage.db import (
    ENV_VAR,
    SchemaTooNew,
    StorageError,
    create_engine,
    open_database,
    resolve_url,
)
from tests.postgres_db import KINDS, database_url

TABLES = {"runs", "workers", "step_metrics", "epoch_metrics", "samples"}


@pytest.fixture(params=KINDS)
def url(request, tmp_path):
    with database_url(request.param, tmp_path) as url:
        yield url


def test_fresh_database_is_migrated_to_head(url):
    db = open_database(url)
    with db.engine.connect() as connection:
        assert migrations.current(connection) == migrations.head() == "0002"
        assert set(sa.inspect(connection).get_table_names()) >= TABLES
    db.dispose()
    again = open_database(url)  # at head: no-op
    again.dispose()


def test_sqlite_settings(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'sub' / 'jobs.db'}")  # makes the folder
    with db.engine.connect() as connection:
        pragma = lambda name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") >= 1000
    db.dispose()


def test_newer_revision_is_refused(url):
    open_database(url).dispose()
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999'")
    engine.dispose()
    with pytest.raises(SchemaTooNew, match=r"9999.*newer than this diffbench"):
        open_database(url)


def test_foreign_database_is_refused(url):
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE things (id INTEGER)")
    engine.dispose()
    with pytest.raises(StorageError, match="not a diffbench database"):
        open_database(url)


def test_migration_matches_models(url):
    """The revisions create what the models describe (no autogenerate diff)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from diffbench.storage.schema import Base

    db = open_database(url)
    with db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    db.dispose()
    assert [d for d in diff if d[0] != "modify_type"] == []


def test_url_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_url(home=tmp_path) == f"sqlite:///{tmp_path.absolute() / 'diffbench.db'}"
    monkeypatch.setenv(ENV_VAR, "sqlite:///env.db")
    assert resolve_url(home=tmp_path) == "sqlite:///env.db"
    assert resolve_url("sqlite:///flag.db", home=tmp_path) == "sqlite:///flag.db"


def test_bad_urls_are_storage_errors(tmp_path):
    with pytest.raises(StorageError, match="in-memory"):
        create_engine("sqlite://")
    with pytest.raises(StorageError):
        open_database("nosuchdialect://host/db")
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError):
        open_database(f"sqlite:///{tmp_path / 'file' / 'jobs.db'}")  # parent is a file
