"""second opinions: the image is de-identified and stored after the prediction is recorded

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 14:40:00

A request is recorded as soon as the model has answered (``image_state`` ``pending``, no content
hash yet); burned-in text masking and storing the image follow in the background and set
``stored`` (with the content hash and path), ``refused`` or ``lost``. Existing rows were stored
whole, so they become ``stored``. ``masked_prediction`` keeps the model's answer for the stored image
when masking burned-in text changed its pixels (the answer shown is the one for the upload's pixels).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('second_opinion_requests', schema=None) as batch_op:
        batch_op.add_column(sa.Column('image_state', sa.String(length=16), nullable=False, server_default='stored'))
        batch_op.add_column(sa.Column('masked_prediction', sa.JSON(), nullable=True))
        batch_op.alter_column('content_hash', existing_type=sa.String(length=64), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM second_opinion_requests WHERE content_hash IS NULL")
    with op.batch_alter_table('second_opinion_requests', schema=None) as batch_op:
        batch_op.alter_column('content_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.drop_column('masked_prediction')
        batch_op.drop_column('image_state')
