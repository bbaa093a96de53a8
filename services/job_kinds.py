"""All of medlabel's job kinds, loaded.

Each noun registers its own kinds with ``services.jobs.register_kind`` when its module is imported
(``prelabel`` in ``services.models``, ``ingest``, ``export``, ``retrain`` in ``services.learning``,
``learn_features``, ``quantize`` in ``services.models``), so the import graph shows every kind and
``services.jobs`` never imports the use cases it runs. The shells that submit or retry jobs (CLI,
portal resources, API, benchmarks) import this module so that every kind is known there.
"""

from __future__ import annotations

from services import export, ingest, learning, models

LOADED = (export, ingest, learning, models)
"""The modules whose import registered the kinds."""
