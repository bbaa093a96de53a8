"""Use cases: the only layer that combines the database with the logic packages.

Every function takes an :class:`services.context.AppContext` (or a session inside one use case),
runs one use case in one transaction, and returns frozen DTOs from :mod:`services.dto`.
"""
