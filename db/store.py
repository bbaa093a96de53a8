"""Content-addressed blob store: bytes stored once under their sha256, written atomically.

Only de-identified bytes are ever given to it. Layout: ``<root>/<aa>/<bb>/<sha256><suffix>``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from medlabel.errors import ConfigError, NotFoundError

_ALLOWED_SUFFIXES = {"", ".dcm", ".png", ".jpg", ".onnx", ".npy", ".json"}


class ContentStore:
    """A folder of immutable blobs named by their sha256."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_for(self, digest: str, suffix: str = "") -> Path:
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"not a sha256 hex digest: {digest!r}")
        if suffix not in _ALLOWED_SUFFIXES:
            raise ValueError(f"unsupported suffix {suffix!r}")
        return self.root / digest[:2] / digest[2:4] / f"{digest}{suffix}"

    def put(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        """Store ``data``; returns ``(sha256, relative path)``. Identical bytes are stored once."""
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
        """Cache bytes derived from stored content (e.g. a display rendition), filed under its source."""
        target = self._derived_path(source_digest, name)
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
            return self._derived_path(source_digest, name).read_bytes()
        except FileNotFoundError:
            return None

    def delete(self, relative: str) -> None:
        """Remove a blob and everything derived from it (used when a reviewer masks or rejects an item)."""
        path = self._resolve(relative)
        digest = path.name.split(".")[0]
        path.unlink(missing_ok=True)
        derived = self.root / "derived" / digest[:2] / digest
        if derived.is_dir():
            for child in derived.iterdir():
                child.unlink(missing_ok=True)
            derived.rmdir()

    def _derived_path(self, source_digest: str, name: str) -> Path:
        self.path_for(source_digest)  # validates the digest
        return self.root / "derived" / source_digest[:2] / source_digest / hashlib.sha256(name.encode()).hexdigest()

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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
