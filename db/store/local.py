"""The content store on a local folder (the default): temp file, fsync, rename."""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path

from db.store.base import CHUNK, SWEEP_MIN_AGE_S, TMP_PREFIX, BlobStore, check_size
from medlabel.errors import ConfigError, NotFoundError
from medlabel.files import fsync_dir, write_atomic


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
        if not target.exists():
            self._write(target, data, durable=True, suffix=suffix)
        return digest, relative

    def put_file(self, source: Path, suffix: str = "", *, max_bytes: int | None = None) -> tuple[str, str]:
        self.key_for("0" * 64, suffix)  # validates the suffix before anything is written
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=TMP_PREFIX, suffix=suffix)
        except OSError as exc:
            raise ConfigError(f"{self.root}: content store is not writable ({exc.strerror or exc})") from None
        try:
            hasher, size = hashlib.sha256(), 0
            with open(source, "rb") as src, os.fdopen(fd, "wb") as handle:
                while chunk := src.read(CHUNK):  # hashed while copied: the file is read once
                    size += len(chunk)
                    check_size(source, size, max_bytes)
                    hasher.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            digest = hasher.hexdigest()
            target = self.path_for(digest, suffix)
            if target.exists():
                Path(tmp).unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                fsync_dir(target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, target.relative_to(self.root).as_posix()

    def sweep(self, min_age_s: float = SWEEP_MIN_AGE_S) -> int:
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - min_age_s
        removed = 0
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TMP_PREFIX):
                    continue
                path = Path(folder) / name
                try:
                    if path.lstat().st_mtime <= cutoff:
                        path.unlink()
                        removed += 1
                except FileNotFoundError:  # its write finished (renamed) or another sweep took it
                    continue
        return removed

    def put_derived(self, source_digest: str, name: str, data: bytes) -> None:
        # A rendition can be derived again, so it is not fsynced.
        self._write(self.root / self.derived_key(source_digest, name), data, durable=False)

    def _write(self, target: Path, data: bytes, *, durable: bool, suffix: str = "") -> None:
        try:
            write_atomic(target, data, durable=durable, suffix=suffix)
        except OSError as exc:
            raise ConfigError(f"{self.root}: content store is not writable ({exc.strerror or exc})") from None

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

