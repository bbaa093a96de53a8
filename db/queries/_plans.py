"""Statements PostgreSQL plans once: their constants are part of their SQL text.

psycopg prepares a statement on the server from its fifth execution on a connection, and PostgreSQL
then keeps one generic plan for it, when that plan is no worse than the ones it makes for each call's
values. A constant sent as a parameter (an enum value, a ``LIMIT 1``, a segment number) spoils that:
the generic plan cannot know that ``LIMIT $9`` is 1, so it sorts instead of walking an index, and each
call is planned anew. Planning the queue walk (four segments, each with its correlated checks) took 2.7
of its 3.0 ms at 20k items; with its constants in the text, PostgreSQL's generic plan ran it in 0.2 ms.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from sqlalchemy.sql import visitors
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.visitors import ExternallyTraversible

S = TypeVar("S", bound=ExternallyTraversible)


def with_constants_inline(stmt: S) -> S:
    """``stmt`` with every value it was built with (anonymous parameters: ``Item.priority == 0``,
    ``.limit(1)``) rendered into its SQL text at execution; named parameters (``bindparam("user_id")``)
    stay parameters. For statements built once (``lru_cache``) and run with named parameters only: a
    value that changes between calls would give every call a text of its own."""

    def inline(element: Any, **_: Any) -> Any:
        if isinstance(element, BindParameter) and element.unique:
            copy = element._clone()  # the public constructor would need the value's type again
            copy.literal_execute = True
            return copy
        return None

    return cast(S, visitors.replacement_traverse(stmt, {}, inline))
