"""audit trail: chain an event when its transaction commits (PostgreSQL), in one statement (SQLite)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 06:40:00

Appending an event used to take the chain's lock (PostgreSQL: an advisory transaction lock) in the
middle of the caller's transaction and hold it to the commit, so every claim and submit of every
reader passed through it one at a time, for as long as the rest of the caller's transaction took.

PostgreSQL, from here: an event is inserted unchained (``hash`` NULL, a negative id from
``audit_events_pending_seq``, and ``chain_tail``, the part of the hashed text that depends on its
content only: ``db.audit_chain.event_tail``). A deferred constraint trigger chains it during COMMIT:
under the advisory lock it gives the event the next id of ``audit_events_id_seq``, reads the hash of
the last chained event, and sets ``prev_hash`` and ``hash`` (SHA-256 of ``'["' || prev || '",' || id ||
',' || tail``, the same text ``db.audit_chain.event_hash`` hashes). The lock is held from the trigger
to the end of the commit: no round trip to the application. Ids stay in chain order, so ``medlabel
audit verify`` is unchanged. A row inserted with its hash already set is left alone (verify judges
it); one inserted with neither hash nor tail is refused.

SQLite: the database's write lock serialises appends already; the application appends in one
INSERT that reads the last event and computes the hash with a function registered on each connection
(``medlabel_chain_hash``), so no trigger is needed. ``chain_tail`` exists on both (unused on SQLite).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHAIN_LOCK = 7_274_209  # db.queries.audit.CHAIN_LOCK
GENESIS = "0" * 64


def upgrade() -> None:
    op.add_column('audit_events', sa.Column('chain_tail', sa.Text(), nullable=True))
    if op.get_bind().dialect.name != 'postgresql':
        return
    op.execute("CREATE SEQUENCE audit_events_pending_seq OWNED BY audit_events.id")
    op.execute("ALTER TABLE audit_events ALTER COLUMN id SET DEFAULT -nextval('audit_events_pending_seq')")
    op.execute(f"""
        CREATE FUNCTION audit_events_chain() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            last_hash text;
            new_id bigint;
        BEGIN
            IF NEW.hash IS NOT NULL THEN
                RETURN NULL;
            END IF;
            IF NEW.chain_tail IS NULL THEN
                RAISE EXCEPTION 'audit events are appended by the application (no chain_tail)';
            END IF;
            PERFORM pg_advisory_xact_lock({CHAIN_LOCK});
            SELECT hash INTO last_hash FROM audit_events WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1;
            last_hash := COALESCE(last_hash, '{GENESIS}');
            new_id := nextval('audit_events_id_seq');
            UPDATE audit_events SET id = new_id, prev_hash = last_hash, chain_tail = NULL,
                hash = encode(sha256(convert_to('["' || last_hash || '",' || new_id || ',' || NEW.chain_tail,
                                                'UTF8')), 'hex')
            WHERE id = NEW.id;
            RETURN NULL;
        END $$""")
    op.execute("CREATE CONSTRAINT TRIGGER audit_events_chain AFTER INSERT ON audit_events "
               "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION audit_events_chain()")


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute("DROP TRIGGER audit_events_chain ON audit_events")
        op.execute("DROP FUNCTION audit_events_chain()")
        op.execute("ALTER TABLE audit_events ALTER COLUMN id SET DEFAULT nextval('audit_events_id_seq')")
        op.execute("DROP SEQUENCE audit_events_pending_seq")
    with op.batch_alter_table('audit_events', schema=None, recreate='never') as batch_op:
        batch_op.drop_column('chain_tail')
