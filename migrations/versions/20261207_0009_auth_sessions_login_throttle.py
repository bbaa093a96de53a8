"""server-side sign-in sessions, known devices, and a sign-in throttle per account name and per client

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 00:10:00

Signed-in browsers hold a random token in an HttpOnly cookie; ``auth_sessions`` keeps only its
SHA-256 hash, so a session survives a reload or a new tab and can be revoked. ``known_devices``
remembers browsers a user signed in from; ``users.external_id`` links single sign-on accounts (a correct password from one passes the per-account
delay). ``login_throttle`` replaces the per-user ``failed_logins``/``locked_until`` counters: failures
are counted per typed account name (existing or not) and per client, keyed by an HMAC.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('auth_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('handoff_hash', sa.String(length=64), nullable=True),
    sa.Column('handoff_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=32), nullable=True),
    sa.Column('sso_ref', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_auth_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_auth_sessions')),
    sa.UniqueConstraint('handoff_hash', name=op.f('uq_auth_sessions_handoff_hash')),
    sa.UniqueConstraint('sso_ref', name=op.f('uq_auth_sessions_sso_ref')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_auth_sessions_token_hash'))
    )
    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_auth_sessions_user', ['user_id', 'revoked_at'], unique=False)

    op.create_table('known_devices',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_known_devices_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_known_devices')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_known_devices_token_hash'))
    )
    with op.batch_alter_table('known_devices', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_known_devices_user_id'), ['user_id'], unique=False)

    op.create_table('login_throttle',
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_start', sa.DateTime(timezone=True), nullable=False),
    sa.Column('blocked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('scope', 'key_hash', name=op.f('pk_login_throttle'))
    )

    # Plain ALTER TABLE (SQLite >= 3.35 drops columns in place): a batch copy of ``users`` would
    # trip the foreign keys that point at it.
    op.add_column('users', sa.Column('external_id', sa.String(length=64), nullable=True))
    op.create_index('ix_users_external_id', 'users', ['external_id'], unique=True)
    op.drop_column('users', 'locked_until')
    op.drop_column('users', 'failed_logins')


def downgrade() -> None:
    op.add_column('users', sa.Column('failed_logins', sa.Integer(), nullable=False, server_default='0'))
    op.add_column('users', sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True))
    op.drop_index('ix_users_external_id', table_name='users')
    op.drop_column('users', 'external_id')

    op.drop_table('login_throttle')
    with op.batch_alter_table('known_devices', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_known_devices_user_id'))
    op.drop_table('known_devices')
    with op.batch_alter_table('auth_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_auth_sessions_user')
    op.drop_table('auth_sessions')
