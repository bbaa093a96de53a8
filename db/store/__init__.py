"""Content-addressed blob store: bytes stored once under their sha256, written atomically.

Only de-identified bytes are ever given to it. Keys are relative POSIX paths under the store's root
(``db.store.base``):

- a blob: ``<aa>/<bb>/<sha256><suffix>`` (what ``put`` returns and the database keeps);
- a rendition derived from a blob: ``derived/<aa>/<sha256>/<sha256 of its name>``.

Two backends share that layout and one API (``put``, ``put_file``, ``get``, ``put_derived``,
``get_derived``, ``delete``, ``exists``, ``sweep``): :class:`ContentStore` on a local folder
(``db.store.local``, the default) and :class:`FsspecContentStore` on any fsspec URL (``db.store.fsspec``:
``s3://bucket/prefix`` on S3 or MinIO). :func:`open_store` picks one from the settings. Both publish a
blob only once all its bytes are written, so a reader never sees half a blob under its final key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from db.store.base import BlobStore
from db.store.fsspec import FsspecContentStore
from db.store.local import ContentStore

__all__ = ["BlobStore", "ContentStore", "FsspecContentStore", "open_store"]


def open_store(url: str | None, options: Mapping[str, Any] | None, default_root: Path) -> BlobStore:
    """The store for ``MEDLABEL_STORE_URL``: a local folder (none given, a plain path or ``file://``)
    or, for any other fsspec URL, an :class:`FsspecContentStore` with ``options``."""
    if not url:
        return ContentStore(default_root)
    if "://" not in url:
        return ContentStore(Path(url).expanduser())
    if url.startswith("file://"):
        return ContentStore(Path(url.removeprefix("file://")).expanduser())
    return FsspecContentStore(url, options)
