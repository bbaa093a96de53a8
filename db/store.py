"""Content-addressed blob store: bytes stored once under their sha256, written atomically.

Only de-identified bytes are ever given to it. Keys are relative POSIX paths under the store's root:

- a blob: ``<aa>/<bb>/<sha256><suffix>`` (what ``put`` returns and the database keeps);
- a rendition derived from a blob: ``derived/<aa>/<sha256>/<sha256 of its name>``.

Two backends share that layout and one API (``put``, ``get``, ``put_derived``, ``get_derived``,
``delete``, ``exists``): :class:`ContentStore` on a local folder (the default) and
``db.store_fsspec.FsspecContentStore`` on any fsspec URL (``s3://bucket/prefix`` on S3 or MinIO).
:func:`open_store` picks one from the settings. Both publish a blob only once all its bytes are
written, so a reader never sees half a blob under its final key.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medlabel.errors import ConfigError, NotFoundError

_ALLOWED_SUFFIXES = {"", ".dcm", ".png", ".jpg", ".onnx", ".npy", ".json"}
_HEX = frozenset("0123456789abcdef")


class BlobStore(ABC):
    """What every backend offers. ``url`` says where the blobs live (for messages and logs)."""

    url: str

    @abstractmethod
    def put(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        """Store ``data``; returns ``(sha256, relative key)``. Identical bytes are stored once."""

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


class ContentStore(BlobStore):
    """A local folder of immutable blobs named by their sha256 (writes: temp file, fsync, rename)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def path_for(self, digest: str, suffix: str = "") -> Path:
        return self.root / self.key_for(digest, suffix)

    def put(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        target = self.path_for(digest, suffix)
        relative = target.relative_to(self.root).as_posix()
        if target.exists():
            return digest, relative
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=suffix)
        except OSError as exc:
            raise ConfigError(f"{self.root}: content store is not writable ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return digest, relative

    def put_derived(self, source_digest: str, name: str, data: bytes) -> None:
        target = self.root / self.derived_key(source_digest, name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        except OSError as exc:
            raise ConfigError(f"{self.root}: content store is not writable ({exc.strerror})") from None
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_derived(self, source_digest: str, name: str) -> bytes | None:
        try:
            return (self.root / self.derived_key(source_digest, name)).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, relative: str) -> None:
        path = self._resolve(relative)
        derived = self.root / self.derived_prefix(self.digest_of(relative))
        path.unlink(missing_ok=True)
        if derived.is_dir():
            for child in derived.iterdir():
                child.unlink(missing_ok=True)
            derived.rmdir()

    def get(self, relative: str) -> bytes:
        path = self._resolve(relative)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"{relative}: not in the content store") from None

    def exists(self, relative: str) -> bool:
        return self._resolve(relative).exists()

    def _resolve(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"path escapes the content store: {relative!r}")
        return path


def open_store(url: str | None, options: Mapping[str, Any] | None, default_root: Path) -> BlobStore:
    """The store for ``MEDLABEL_STORE_URL``: a local folder (none given, a plain path or ``file://``)
    or, for any other fsspec URL, an :class:`~db.store_fsspec.FsspecContentStore` with ``options``."""
    if not url:
        return ContentStore(default_root)
    if "://" not in url:
        return ContentStore(Path(url).expanduser())
    if url.startswith("file://"):
        return ContentStore(Path(url.removeprefix("file://")).expanduser())
    from db.store_fsspec import FsspecContentStore

    return FsspecContentStore(url, options)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
