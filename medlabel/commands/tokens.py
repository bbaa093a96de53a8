"""`medlabel tokens create|list|revoke`: personal API tokens (docs/api.md)."""

from __future__ import annotations

import click

from medlabel.commands import app_context

# services.api_tokens's values, repeated so that the CLI starts without the database layer (a test compares)
SCOPES = ("predict", "read", "ingest", "export")
DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 365



@click.group("tokens")
def command() -> None:
    """Personal API tokens: shown once at creation, stored hashed, scoped, expiring, revocable."""


@command.command("create")
@click.argument("username")
@click.option("--name", required=True, help="What the token is for, e.g. 'viewer in room 3'.")
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(SCOPES),
              help="Repeat for several; only scopes the user's role may use.")
@click.option("--expires-days", default=DEFAULT_EXPIRY_DAYS, show_default=True,
              type=click.IntRange(1, MAX_EXPIRY_DAYS), help="Days until the token stops working.")
def create(username: str, name: str, scopes: tuple[str, ...], expires_days: int) -> None:
    """Create a token for USERNAME and print it (once: only its hash is kept)."""
    from services.api_tokens import create_token

    with app_context() as ctx:
        new = create_token(ctx, username, name, scopes, expires_days=expires_days)
    token = new.token
    click.echo(f"token {token.id} for {token.user} ({', '.join(token.scopes)}), expires "
               f"{token.expires_at:%Y-%m-%d}; shown only now:", err=True)
    click.echo(new.secret)


@command.command("list")
@click.option("--user", "username", help="Only this user's tokens.")
def list_(username: str | None) -> None:
    """List tokens (never the tokens themselves): id, user, name, scopes, state, last use."""
    from services.api_tokens import list_tokens

    with app_context() as ctx:
        tokens = list_tokens(ctx, username=username)
    for t in tokens:
        last = "never used" if t.last_used_at is None else f"last used {t.last_used_at:%Y-%m-%d %H:%M}"
        expires = "" if t.expires_at is None else f"expires {t.expires_at:%Y-%m-%d}"
        click.echo(f"{t.id:>5}  {t.user:<20} {t.prefix}...  {t.name:<24} {','.join(t.scopes):<24} "
                   f"{t.state:<8} {expires}  {last}")


@command.command("revoke")
@click.argument("token_id", type=int)
def revoke(token_id: int) -> None:
    """Revoke token TOKEN_ID at once."""
    from services.api_tokens import revoke_token

    with app_context() as ctx:
        token = revoke_token(ctx, token_id)
    click.echo(f"token {token.id} of {token.user} revoked")
