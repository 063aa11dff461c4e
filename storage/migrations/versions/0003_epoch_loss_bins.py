"""epoch_metrics.fixed_valid_bins: the fixed-noise validation loss per t-bin of an epoch.

One nullable JSON column (strict JSON text, like the other JSON columns: ``JSONValue`` in
`storage.schema` keeps NaN and ±inf as strings), a list of one loss per bin of the edges the
run's provenance records (``"loss_bins"``). Rows written before this revision, and epochs
without validation, hold NULL. Adding a nullable column rewrites nothing, on SQLite too.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (NULL for the rows already there)."""
    op.add_column("epoch_metrics", sa.Column("fixed_valid_bins", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the column and the per-bin losses in it."""
    with op.batch_alter_table("epoch_metrics") as batch:
        batch.drop_column("fixed_valid_bins")
