"""Alembic's entry point: runs on the connection handed over in ``config.attributes``
(`diffbench.storage.migrations`), or, from the ``alembic`` command line, on ``-x url=…``."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from diffbench.storage.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: sa.Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite",
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") \
        or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database: alembic -x url=sqlite:///path.db …")
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        _run(connection)
