"""Alembic migrations (``alembic upgrade head`` from the repo root, or ``medlabel init``)."""
