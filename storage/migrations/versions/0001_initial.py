"""The initial schema: runs (the job table), workers, step and epoch metrics, samples.

Times are naive UTC (``DateTime``); JSON columns are strict JSON text; a metric that may be
non-finite has a ``*_kind`` flag (0 finite, 1 NaN, 2 +inf, 3 -inf) next to its value.

Revision ID: 0001
Revises:
Create Date: 2026-05-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the tables."""
    op.create_table('workers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('device', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=False),
    sa.Column('stopped_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    op.create_table('runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('preset', sa.String(length=64), nullable=False),
    sa.Column('optimizer', sa.String(length=64), nullable=False),
    sa.Column('schedule', sa.String(length=64), nullable=False),
    sa.Column('lr', sa.Float(precision=53), nullable=False),
    sa.Column('weight_decay', sa.Float(precision=53), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('epochs', sa.Integer(), nullable=True),
    sa.Column('overrides', sa.Text(), nullable=False),
    sa.Column('identity', sa.String(length=64), nullable=False),
    sa.Column('tags', sa.Text(), nullable=False),
    sa.Column('config', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.Column('steps_done', sa.Integer(), nullable=False),
    sa.Column('checkpoint', sa.Text(), nullable=True),
    sa.Column('provenance', sa.Text(), nullable=True),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('traceback', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.id'],
                            name=op.f('fk_runs_worker_id_workers'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs'))
    )
    op.create_index('ix_runs_claim', 'runs', ['status', 'priority', 'id'])
    op.create_index('ix_runs_identity', 'runs', ['identity'])
    op.create_index('ix_runs_lease', 'runs', ['status', 'lease_expires_at'])
    op.create_table('epoch_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('train_loss', sa.Float(precision=53), nullable=True),
    sa.Column('train_loss_kind', sa.SmallInteger(), nullable=True),
    sa.Column('valid_loss', sa.Float(precision=53), nullable=True),
    sa.Column('valid_loss_kind', sa.SmallInteger(), nullable=True),
    sa.Column('fixed_valid_loss', sa.Float(precision=53), nullable=True),
    sa.Column('fixed_valid_loss_kind', sa.SmallInteger(), nullable=True),
    sa.Column('epoch_s', sa.Float(precision=53), nullable=True),
    sa.Column('valid_s', sa.Float(precision=53), nullable=True),
    sa.Column('sample_s', sa.Float(precision=53), nullable=True),
    sa.Column('train_s', sa.Float(precision=53), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                            name=op.f('fk_epoch_metrics_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_epoch_metrics'))
    )
    op.create_index('ix_epoch_metrics_run', 'epoch_metrics', ['run_id', 'id'])
    op.create_table('samples',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('shape', sa.Text(), nullable=False),
    sa.Column('dtype', sa.String(length=16), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                            name=op.f('fk_samples_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_samples'))
    )
    op.create_index('ix_samples_run', 'samples', ['run_id', 'id'])
    op.create_table('step_metrics',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('loss', sa.Float(precision=53), nullable=True),
    sa.Column('loss_kind', sa.SmallInteger(), nullable=True),
    sa.Column('lr', sa.Float(precision=53), nullable=True),
    sa.Column('lr_kind', sa.SmallInteger(), nullable=True),
    sa.Column('grad_norm', sa.Float(precision=53), nullable=True),
    sa.Column('grad_norm_kind', sa.SmallInteger(), nullable=True),
    sa.Column('data_ms', sa.Float(precision=53), nullable=True),
    sa.Column('compute_ms', sa.Float(precision=53), nullable=True),
    sa.Column('optimizer_ms', sa.Float(precision=53), nullable=True),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'],
                            name=op.f('fk_step_metrics_run_id_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_step_metrics'))
    )
    op.create_index('ix_step_metrics_run', 'step_metrics', ['run_id', 'id'])


def downgrade() -> None:
    """Drop the tables."""
    op.drop_index('ix_step_metrics_run', table_name='step_metrics')
    op.drop_table('step_metrics')
    op.drop_index('ix_samples_run', table_name='samples')
    op.drop_table('samples')
    op.drop_index('ix_epoch_metrics_run', table_name='epoch_metrics')
    op.drop_table('epoch_metrics')
    op.drop_index('ix_runs_lease', table_name='runs')
    op.drop_index('ix_runs_identity', table_name='runs')
    op.drop_index('ix_runs_claim', table_name='runs')
    op.drop_table('runs')
    op.drop_table('workers')
