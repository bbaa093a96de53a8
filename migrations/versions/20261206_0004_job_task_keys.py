"""jobs: the Dask task key of the current attempt

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 23:50:00

Task keys were ``medlabel-job-{id}-{attempt}``: two databases sharing one Dask cluster (two
installations, a reset database, the tests) reused them and the scheduler handed back another
database's task, so the job never ran. Keys now carry a random part and are stored on the job, so
that a queued or running job whose task the scheduler no longer knows is marked failed.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('task_key', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('task_key')
