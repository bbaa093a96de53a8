"""jobs, embeddings, round kinds, active-learning scores, second-opinion records

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 11:20:37.353637
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('state', sa.Enum('queued', 'running', 'succeeded', 'failed', 'cancelled', name='jobstate', native_enum=False, length=24), nullable=False),
    sa.Column('progress_done', sa.Integer(), nullable=False),
    sa.Column('progress_total', sa.Integer(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('result', sa.JSON(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cancel_requested', sa.Boolean(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('created_by_id', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('worker', sa.String(length=128), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_id'], ['users.id'], name=op.f('fk_jobs_created_by_id_users')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name=op.f('fk_jobs_project_id_projects'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_state', ['state', 'created_at'], unique=False)

    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('available_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('arm', sa.String(length=16), nullable=True))

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('al_score', sa.Double(), nullable=True))
        batch_op.create_index('ix_items_al_queue', ['project_id', 'deid_status', 'priority', 'al_score'], unique=False)

    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('embedding', sa.LargeBinary(), nullable=True))

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings', sa.JSON(), nullable=False, server_default='{}'))

    with op.batch_alter_table('second_opinion_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('model_name', sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column('model_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('source_kind', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('stored_path', sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column('deid_report', sa.JSON(), nullable=False, server_default='{}'))

    with op.batch_alter_table('verification_rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.Enum('inter_reader', 'intra_reader', 'automation_bias', name='roundkind', native_enum=False, length=24), nullable=False, server_default='inter_reader'))



def downgrade() -> None:
    with op.batch_alter_table('verification_rounds', schema=None) as batch_op:
        batch_op.drop_column('kind')

    with op.batch_alter_table('second_opinion_requests', schema=None) as batch_op:
        batch_op.drop_column('deid_report')
        batch_op.drop_column('stored_path')
        batch_op.drop_column('source_kind')
        batch_op.drop_column('model_version')
        batch_op.drop_column('model_name')

    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('settings')

    with op.batch_alter_table('predictions', schema=None) as batch_op:
        batch_op.drop_column('embedding')

    with op.batch_alter_table('items', schema=None) as batch_op:
        batch_op.drop_index('ix_items_al_queue')
        batch_op.drop_column('al_score')

    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_column('arm')
        batch_op.drop_column('available_at')

    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_state')

    op.drop_table('jobs')
