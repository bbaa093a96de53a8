"""models a lead approves, retrains that must not be worse, out-of-distribution warnings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 00:05:00

- ``model_versions.approved_at`` / ``approved_by_id``: approved for clinicians' second opinions by a
  lead (clinicians see approved versions only). Existing versions start *not approved*: a lead
  approves each one on the Models page after reading its card, so nothing reaches a clinician silently.
- ``model_versions.card``: the model card (intended input, training data, validation on verified
  labels with intervals, limitations); ``model_versions.ood``: the out-of-distribution detector
  (method, fitted statistics in the store, threshold calibrated to a false-alarm rate).
- ``active_learning_rounds.state`` (adopted | held | approved | rejected), ``gate`` (the comparison
  with the current model on the verified labels), ``decided_by_id`` / ``decided_at``: a retrain that is
  not shown to be not worse is held for a lead. Existing rounds were adopted.
- The user ids carry no foreign key: adding one makes SQLite rebuild ``model_versions``, which other
  tables reference.
- ``second_opinion_requests.ood``: how unlike the training data the upload was, with the warning.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('approved_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('approved_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('card', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('ood', sa.JSON(), nullable=True))
    with op.batch_alter_table('active_learning_rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('state', sa.String(length=16), nullable=False, server_default='adopted'))
        batch_op.add_column(sa.Column('gate', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('decided_by_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('second_opinion_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ood', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('second_opinion_requests', schema=None) as batch_op:
        batch_op.drop_column('ood')
    with op.batch_alter_table('active_learning_rounds', schema=None) as batch_op:
        batch_op.drop_column('decided_at')
        batch_op.drop_column('decided_by_id')
        batch_op.drop_column('gate')
        batch_op.drop_column('state')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('ood')
        batch_op.drop_column('card')
        batch_op.drop_column('approved_by_id')
        batch_op.drop_column('approved_at')
