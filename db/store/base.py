"""What every content store offers, and the one key layout they share.

Keys are relative POSIX paths under the store's root:

- a blob: ``<aa>/<bb>/<sha256><suffix>`` (what ``put`` returns and the database keeps);
- a rendition derived from a blob: ``derived/<aa>/<sha256>/<sha256 of its name>``.
"""

from __future__ import annotations

import hashlib
import posixpath
from abc import ABC, abstractmethod
from pathlib import Path

from medlabel.errors import InputError

_ALLOWED_SUFFIXES = {"", ".dcm", ".png", ".jpg", ".onnx", ".npy", ".json"}
_HEX = frozenset("0123456789abcdef")
CHUNK = 1 << 20
TMP_PREFIX = ".tmp-"  # medlabel.files.write_atomic's temporary names
SWEEP_MIN_AGE_S = 3600.0  # a temporary file this old belongs to no live write (one blob takes seconds)


def hash_file(source: Path, max_bytes: int | None = None) -> tuple[str, int]:
    """``(sha256, size)`` of a file read in 1 MiB chunks (never whole into memory); ``InputError`` naming
    it past ``max_bytes``."""
    digest, size = hashlib.sha256(), 0
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            size += len(chunk)
            check_size(source, size, max_bytes)
            digest.update(chunk)
    return digest.hexdigest(), size


def check_size(source: Path, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise InputError(source, f"larger than the limit of {max_bytes >> 20} MiB")


class BlobStore(ABC):
    """What every backend offers. ``url`` says where the blobs live (for messages and logs)."""

    url: str

    @abstractmethod
    def put(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        """Store ``data``; returns ``(sha256, relative key)``. Identical bytes are stored once."""

    @abstractmethod
    def put_file(self, source: Path, suffix: str = "", *, max_bytes: int | None = None) -> tuple[str, str]:
        """Like :meth:`put` for a file on disk, streamed in chunks (a multi-GB model never sits in memory
        whole); ``InputError`` naming ``source`` once it is past ``max_bytes``, with nothing stored."""

    @abstractmethod
    def sweep(self, min_age_s: float = SWEEP_MIN_AGE_S) -> int:
        """Remove temporary files left by writes that were killed (older than ``min_age_s``, so a write in
        progress in another process is left alone); returns how many were removed."""

    @abstractmethod
    def get(self, relative: str) -> bytes:
        """The blob's bytes; ``NotFoundError`` naming the key when it is missing."""

    @abstractmethod
    def put_derived(self, source_digest: str, name: str, data: bytes) -> None:
        """Cache bytes derived from stored content (e.g. a display rendition), filed under its source."""

    @abstractmethod
    def get_derived(self, source_digest: str, name: str) -> bytes | None:
        """A rendition stored by ``put_derived``, or ``None``."""

    @abstractmethod
    def delete(self, relative: str) -> None:
        """Remove a blob and everything derived from it (a reviewer masked or rejected the item)."""

    @abstractmethod
    def exists(self, relative: str) -> bool:
        """Whether a blob is stored under ``relative``."""

    @staticmethod
    def key_for(digest: str, suffix: str = "") -> str:
        """The relative key of a blob: ``<aa>/<bb>/<sha256><suffix>``."""
        if len(digest) != 64 or not _HEX.issuperset(digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        if suffix not in _ALLOWED_SUFFIXES:
            raise ValueError(f"unsupported suffix {suffix!r}")
        return f"{digest[:2]}/{digest[2:4]}/{digest}{suffix}"

    @classmethod
    def derived_prefix(cls, source_digest: str) -> str:
        """The folder holding everything derived from one blob."""
        cls.key_for(source_digest)  # validates the digest
        return f"derived/{source_digest[:2]}/{source_digest}"

    @classmethod
    def derived_key(cls, source_digest: str, name: str) -> str:
        return f"{cls.derived_prefix(source_digest)}/{hashlib.sha256(name.encode()).hexdigest()}"

    @staticmethod
    def check_key(relative: str) -> str:
        """``relative`` normalised; ``ValueError`` if it would leave the store's root."""
        normal = posixpath.normpath(relative)
        if not relative or normal.startswith(("/", "..")) or "\\" in relative or normal == ".":
            raise ValueError(f"path escapes the content store: {relative!r}")
        return normal

    @staticmethod
    def digest_of(relative: str) -> str:
        """The sha256 a blob key names (its file name without the suffix)."""
        return posixpath.basename(relative).split(".")[0]
