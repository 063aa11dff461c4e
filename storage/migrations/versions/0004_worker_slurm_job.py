"""workers.slurm_job: the Slurm job a worker runs in, for `diffbench workers ls`.

One nullable VARCHAR(64) column: ``<array job id>_<task id>`` for a worker of a job array
(`diffbench slurm submit`), the plain job id for one of a single job, NULL for a worker
started outside Slurm and for the rows already there. Adding a nullable column rewrites
nothing, on SQLite too.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (NULL for the workers already there)."""
    op.add_column("workers", sa.Column("slurm_job", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop the column and the job ids in it."""
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("slurm_job")
