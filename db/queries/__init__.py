"""Query functions: ``(session, ...) -> rows``. None of them commits."""
