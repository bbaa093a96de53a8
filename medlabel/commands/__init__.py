"""CLI subcommands, one module each; ``medlabel.cli`` registers them explicitly."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.context import AppContext


def app_context() -> AppContext:
    """The commands' context from the ``MEDLABEL_*`` settings, as ``with app_context() as ctx:`` (it closes
    itself, after any background work on its database). Services are imported late: ``--help`` stays fast."""
    from services.context import context_from_environment

    return context_from_environment()
