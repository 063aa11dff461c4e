"""worker_load, calibrations, calibration_times: workers' load and measured step times.

``worker_load``: one row per heartbeat that carried a sample of the worker's load (GPU
utilisation %, GPU memory used/total in bytes, GPU temperature °C, the host's CPU % and
RAM used/total in bytes), NULL where a sensor is absent; `storage.workers` keeps the last
few per worker. ``calibrations`` (one per `diffbench calibrate`: device as kind · name,
preset, host, time, rounds, steps per round, settings as strict JSON text) and
``calibration_times`` (per optimizer: mean ms per step over the rounds, their sample std,
each round's mean as a JSON list). New tables only: the rows already there are not touched,
and old workers simply have no load.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the three tables and their (parent, id) indexes."""
    op.create_table('worker_load',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('gpu_util', sa.Float(precision=53), nullable=True),
    sa.Column('gpu_memory_used', sa.BigInteger(), nullable=True),
    sa.Column('gpu_memory_total', sa.BigInteger(), nullable=True),
    sa.Column('gpu_temp', sa.Float(precision=53), nullable=True),
    sa.Column('cpu_percent', sa.Float(precision=53), nullable=True),
    sa.Column('ram_used', sa.BigInteger(), nullable=True),
    sa.Column('ram_total', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.id'],
                            name=op.f('fk_worker_load_worker_id_workers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_worker_load'))
    )
    op.create_index('ix_worker_load_worker', 'worker_load', ['worker_id', 'id'])
    op.create_table('calibrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device', sa.String(length=255), nullable=False),
    sa.Column('preset', sa.Text(), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('rounds', sa.Integer(), nullable=False),
    sa.Column('steps', sa.Integer(), nullable=False),
    sa.Column('settings', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calibrations'))
    )
    op.create_index('ix_calibrations_device_preset', 'calibrations',
                    ['device', 'preset', 'id'])
    op.create_table('calibration_times',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('calibration_id', sa.Integer(), nullable=False),
    sa.Column('optimizer', sa.String(length=64), nullable=False),
    sa.Column('implementation', sa.String(length=255), nullable=True),
    sa.Column('ms_per_step', sa.Float(precision=53), nullable=False),
    sa.Column('ms_std', sa.Float(precision=53), nullable=True),
    sa.Column('rounds_ms', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['calibration_id'], ['calibrations.id'],
                            name=op.f('fk_calibration_times_calibration_id_calibrations'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calibration_times'))
    )
    op.create_index('ix_calibration_times_calibration', 'calibration_times',
                    ['calibration_id', 'id'])


def downgrade() -> None:
    """Drop the tables, the load samples and the calibrations in them."""
    op.drop_index('ix_calibration_times_calibration', table_name='calibration_times')
    op.drop_table('calibration_times')
    op.drop_index('ix_calibrations_device_preset', table_name='calibrations')
    op.drop_table('calibrations')
    op.drop_index('ix_worker_load_worker', table_name='worker_load')
    op.drop_table('worker_load')
