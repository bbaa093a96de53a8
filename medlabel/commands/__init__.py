"""CLI subcommands, one module each; ``medlabel.cli`` registers them explicitly."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.authz import Actor
    from services.context import AppContext


def app_context() -> AppContext:
    """The commands' context from the ``MEDLABEL_*`` settings, as ``with app_context() as ctx:`` (it closes
    itself, after any background work on its database). Services are imported late: ``--help`` stays fast."""
    from medlabel.settings import load_settings
    from services.context import AppContext

    return AppContext.from_settings(load_settings())


def acting(ctx: AppContext) -> Actor:
    """Who a command acts as (services/authz.py): the user named by ``medlabel --as USER``, with that
    user's rights; without ``--as``, the local administrator (whoever can run the CLI against the
    data folder and its secret key administers the installation)."""
    from services import authz

    return authz.actor_named(ctx, as_user())


def as_user() -> str | None:
    """The user named by ``medlabel --as USER``, or None (the local administrator)."""
    import click

    current = click.get_current_context(silent=True)
    return current.find_root().params.get("as_user") if current is not None else None


def require(roles: tuple[str, ...], what: str, project: str | None = None) -> None:
    """Refuse the command when ``--as`` names a user outside ``roles`` (or, with ``project``, without
    access to it). Without ``--as`` the local administrator may do everything."""
    name = as_user()
    if name is None:
        return
    from services import authz

    with app_context() as ctx:
        who = authz.actor_named(ctx, name)
        if project is None:
            authz.require_role(ctx, who, roles, what)
        else:
            authz.require_project(ctx, who, project, roles=roles)


def local_only(what: str) -> None:
    """Commands that work on the data folder itself (init, backup, restore) run as the local
    administrator only."""
    if as_user() is not None:
        from medlabel.errors import PermissionDenied

        raise PermissionDenied(f"{what} runs as the local administrator only (without --as)")
