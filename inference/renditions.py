"""Model renditions: an item decoded at a model's input size (frame 0, the file's own window) as a
small uint8 array, kept between runs so a later pre-labelling run of any model of that size skips the
full-size decode (``inference.pipeline`` reads and writes them; ingest makes them ahead of time).

Pure: the cache is anything with ``get``/``put`` (``RenditionCache``); ``DerivedRenditions`` keeps them
as derived content of each item's blob in a content store.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from inference.types import InputSpec

RENDITION_VERSION = 2  # bump when decoding changes what a rendition holds: old cached ones are ignored
# (v2: stored values area-averaged before the filter, inference.imaging.area_reduce)


class RenditionCache(Protocol):
    """Where model renditions are kept between runs, by ``Source.cache_key`` (must pickle for processes)."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes) -> None: ...


class DerivedStore(Protocol):
    """What ``DerivedRenditions`` needs of a content store (``db.store``'s stores have it)."""

    def get_derived(self, source_digest: str, name: str) -> bytes | None: ...

    def put_derived(self, source_digest: str, name: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class DerivedRenditions:
    """Model renditions kept as derived content of each item's blob (``Source.cache_key`` = its content
    hash) under ``name`` (``rendition_key(spec)``). Defined here, not in the services, so that a worker
    unpickling it imports no more than the store's own module."""

    store: DerivedStore
    name: str

    def get(self, key: str) -> bytes | None:
        return self.store.get_derived(key, self.name)

    def put(self, key: str, data: bytes) -> None:
        self.store.put_derived(key, self.name, data)


def rendition_key(spec: InputSpec) -> str:
    """The derived-content name of a model rendition: depends on the model size only (frame 0, the
    file's own window), so every model with the same input size shares it."""
    crop = "" if spec.crop is None else f"-{spec.crop}"
    return f"model-rendition/v{RENDITION_VERSION}/{spec.height}x{spec.width}{crop}"


def encode_rendition(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, np.ascontiguousarray(image, dtype=np.uint8), allow_pickle=False)
    return out.getvalue()


def decode_rendition(blob: bytes, spec: InputSpec) -> np.ndarray | None:
    """A cached rendition, or None when it is unreadable or not at the model size (then decode again)."""
    try:
        arr = np.load(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, OSError, EOFError):
        return None
    ok = arr.dtype == np.uint8 and arr.shape[:2] == (spec.height, spec.width) and arr.ndim in (2, 3)
    return arr if ok else None
