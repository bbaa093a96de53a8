"""The HTTP API (FastAPI on uvicorn): a shell beside the portal, see docs/api.md.

Like the portal it only parses requests, checks the caller (token, scope, role, limits), calls one
service function and serialises the result; import-linter keeps it off the database and the models.
"""

PREFIX = "/api/v1"  # every route, the docs and the schema live under it (the proxy passes /api/ through)
