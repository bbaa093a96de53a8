"""audit trail: hash chain and append-only triggers

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 01:20:00

Each audit event carries the hash of the event before it (``prev_hash``) and its own (``hash``, over its
content and ``prev_hash``); existing events are chained here in id order. Triggers refuse UPDATE (except
setting the hash of a new event, once) and DELETE on ``audit_events``: SQLite ``RAISE(ABORT)``,
PostgreSQL a plpgsql trigger function. ``event_hash`` is a copy of ``db.audit_chain.event_hash``.
A batch (table-rebuilding) migration of ``audit_events`` on SQLite must re-create the triggers.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

GENESIS = "0" * 64
MESSAGE = "audit events are append-only"


def _when(at: dt.datetime) -> str:
    if at.tzinfo is not None:
        at = at.astimezone(dt.UTC).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def event_hash(prev_hash, event_id, at, actor_id, action, target_type, target_id, payload) -> str:  # noqa: ANN001
    body = json.dumps([prev_hash, event_id, _when(at), actor_id, action, target_type, target_id, payload],
                      sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def _parse(value):  # noqa: ANN001, ANN202 - SQLite hands back text through a plain table
    if isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    return value


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f('uq_audit_events_hash'), ['hash'])
    bind = op.get_bind()
    events = sa.table('audit_events', sa.column('id', sa.Integer), sa.column('at', sa.DateTime),
                      sa.column('actor_id', sa.Integer), sa.column('action', sa.String),
                      sa.column('target_type', sa.String), sa.column('target_id', sa.String),
                      sa.column('payload', sa.JSON), sa.column('prev_hash', sa.String), sa.column('hash', sa.String))
    prev = GENESIS
    for row in bind.execute(sa.select(events).order_by(events.c.id)).mappings().all():
        digest = event_hash(prev, row['id'], _parse(row['at']), row['actor_id'], row['action'], row['target_type'],
                            row['target_id'], row['payload'])
        bind.execute(events.update().where(events.c.id == row['id']).values(prev_hash=prev, hash=digest))
        prev = digest
    if bind.dialect.name == 'postgresql':
        op.execute(f"""
            CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP = 'UPDATE' AND OLD.hash IS NULL THEN
                    RETURN NEW;
                END IF;
                RAISE EXCEPTION '{MESSAGE}';
            END $$""")
        op.execute("CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events "
                   "FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()")
    else:
        op.execute("CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events WHEN OLD.hash IS NOT NULL "
                   f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")
        op.execute("CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events "
                   f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER audit_events_append_only ON audit_events")
        op.execute("DROP FUNCTION audit_events_append_only()")
    else:
        op.execute("DROP TRIGGER audit_events_no_update")
        op.execute("DROP TRIGGER audit_events_no_delete")
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_audit_events_hash'), type_='unique')
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
