"""runs.preset holds a preset name or a preset file's path: TEXT instead of VARCHAR(64).

PostgreSQL enforces VARCHAR lengths, and a path such as ``/home/me/sweeps/wide.toml``
easily passes 64 characters. SQLite keeps any length in any column (a declared type is
only an affinity, and VARCHAR and TEXT share one), so there the table is left as it is:
rebuilding it would drop and re-create the job table under its metric rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Widen runs.preset where the database enforces lengths."""
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("runs", "preset", type_=sa.Text(), existing_type=sa.String(64),
                        existing_nullable=False)


def downgrade() -> None:
    """Back to VARCHAR(64) (fails where a longer preset path is stored)."""
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column("runs", "preset", type_=sa.String(64), existing_type=sa.Text(),
                        existing_nullable=False)
