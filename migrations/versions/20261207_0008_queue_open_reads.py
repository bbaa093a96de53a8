"""queue: items keep a count of submitted primary reads and whether they still need one

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 00:00:00

``items.reads_done`` counts the item's DONE primary-read assignments and ``items.queue_open`` says
``reads_done < projects.labels_per_item``; both queue indexes lead with ``queue_open`` after the
project and status, so a claim walks only items that still need a read, however many are finished.
Existing rows are filled from the assignments.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reads_done', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('queue_open', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.drop_index('ix_items_queue')
        batch_op.drop_index('ix_items_al_queue')
    op.execute("UPDATE items SET reads_done = (SELECT count(*) FROM assignments a WHERE a.item_id = items.id "
               "AND a.kind = 'label' AND a.status = 'done')")
    op.execute("UPDATE items SET queue_open = (reads_done < (SELECT p.labels_per_item FROM projects p "
               "WHERE p.id = items.project_id))")
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.create_index('ix_items_queue', ['project_id', 'deid_status', 'queue_open', 'priority', 'random_key',
                                                 'id'], unique=False)
        batch_op.create_index('ix_items_al_queue', ['project_id', 'deid_status', 'queue_open', 'priority', 'al_score',
                                                    'random_key', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_al_queue')
        batch_op.drop_index('ix_items_queue')
        batch_op.create_index('ix_items_al_queue', ['project_id', 'deid_status', 'priority', 'al_score'], unique=False)
        batch_op.create_index('ix_items_queue', ['project_id', 'deid_status', 'priority', 'random_key', 'id'],
                              unique=False)
        batch_op.drop_column('queue_open')
        batch_op.drop_column('reads_done')
