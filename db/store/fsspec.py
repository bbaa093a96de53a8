"""The content store on any fsspec URL: ``s3://bucket/prefix`` on S3 or MinIO, ``gs://``, ``az://``...

Same layout and semantics as the local folder (see ``db.store.local``):

- **Write then publish.** On object stores an object appears under its key only once all of its
  bytes have arrived: a single PUT is atomic, and a multipart upload (s3fs uses one above
  ``2 * part_size``, 100 MiB by default) becomes visible only when it is completed; a failed one is
  aborted. So the whole blob is uploaded straight to its final key. Filesystems without that
  guarantee (SFTP, HDFS...) get a temporary key under ``.tmp/`` and a rename.
- **Stored once.** The key is the sha256; a blob already there is not uploaded again.
- **Errors.** A missing object raises ``NotFoundError`` naming its URL; a store that refuses writes
  (access denied, no such bucket) or an unknown protocol raises ``ConfigError``.
- **Read cache.** Blobs never change once written, so each process keeps the ones it read
  recently in a small in-memory LRU (64 MiB by default). Losing it costs a re-read, nothing else.
  A blob deleted by another process may linger in this process's cache until evicted, but no item
  refers to it any more (masking stores new bytes under a new key).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from db.store.base import SWEEP_MIN_AGE_S, BlobStore, hash_file
from medlabel.errors import ConfigError, NotFoundError

DEFAULT_CACHE_BYTES = 64 * 2**20
# Object stores where an object becomes visible only after its whole upload completes.
_ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "memory"})
_LISTING_CACHE_PROTOCOLS = _ATOMIC_PUT_PROTOCOLS - {"memory"}


class FsspecContentStore(BlobStore):
    """Blobs under ``url`` on an fsspec filesystem built with ``options`` (e.g. ``endpoint_url``)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, part_size: int | None = None) -> None:
        import fsspec.core

        self.url = url.rstrip("/")
        self.options = dict(options or {})
        self.cache_bytes = cache_bytes
        self.part_size = part_size
        fs_options = dict(self.options)
        if self.url.split("://", 1)[0] in _LISTING_CACHE_PROTOCOLS:
            # Keys are read by name, never from a listing cached while other processes write.
            fs_options.setdefault("use_listings_cache", False)
        try:
            self._fs, root = fsspec.core.url_to_fs(self.url, **fs_options)
        except ImportError as exc:
            raise ConfigError(f"{self.url}: the package for this store is not installed ({exc})") from None
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{self.url}: not a usable store URL or options ({exc})") from None
        self._root = root.rstrip("/")
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        self._atomic_put = bool(_ATOMIC_PUT_PROTOCOLS.intersection(protocols))
        self._cache = _LruBytes(cache_bytes)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickles as its configuration (for Dask workers); the cache and connections are rebuilt."""
        return _rebuild, (self.url, self.options, self.cache_bytes, self.part_size)

    def put(self, data: bytes, suffix: str = "") -> tuple[str, str]:
        digest = hashlib.sha256(data).hexdigest()
        relative = self.key_for(digest, suffix)
        path = self._path(relative)
        try:
            if not self._fs.exists(path):
                self._publish(path, data)
        except (PermissionError, FileNotFoundError) as exc:  # access denied; no such bucket
            raise ConfigError(f"{self.url}: content store is not writable ({_reason(exc)})") from None
        self._cache.put(relative, data)
        return digest, relative

    def put_file(self, source: Path, suffix: str = "", *, max_bytes: int | None = None) -> tuple[str, str]:
        """Hashed in one streamed pass, then uploaded from the file (s3fs: a multipart upload of 50 MiB
        parts); the file must not change in between (size and modification time are compared)."""
        before = os.stat(source)
        digest, _ = hash_file(source, max_bytes)
        relative = self.key_for(digest, suffix)
        path = self._path(relative)
        try:
            if not self._fs.exists(path):
                after = os.stat(source)
                if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                    raise ConfigError(f"{source}: the file changed while it was being stored; try again")
                self._publish_file(path, source)
        except (PermissionError, FileNotFoundError) as exc:
            raise ConfigError(f"{self.url}: content store is not writable ({_reason(exc)})") from None
        return digest, relative

    def sweep(self, min_age_s: float = SWEEP_MIN_AGE_S) -> int:
        """Object stores publish atomically and leave no temporary key (an incomplete multipart upload is
        invisible and expires by the bucket's lifecycle); other filesystems may leave ``.tmp/`` keys."""
        if self._atomic_put:
            return 0
        try:
            entries = self._fs.ls(self._path(".tmp"), detail=True)
        except FileNotFoundError:
            return 0
        cutoff = time.time() - min_age_s
        removed = 0
        for entry in entries:
            modified = entry.get("mtime") or entry.get("LastModified") or entry.get("created")
            stamp = modified.timestamp() if hasattr(modified, "timestamp") else modified
            if isinstance(stamp, int | float) and stamp <= cutoff:
                try:
                    self._fs.rm_file(entry["name"])
                    removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def get(self, relative: str) -> bytes:
        relative = self.check_key(relative)
        data = self._cache.get(relative)
        if data is None:
            try:
                data = bytes(self._fs.cat_file(self._path(relative)))
            except FileNotFoundError:
                raise NotFoundError(f"{self.url}/{relative}: not in the content store") from None
            except PermissionError as exc:
                raise ConfigError(f"{self.url}: content store is not readable ({_reason(exc)})") from None
            self._cache.put(relative, data)
        return data

    def put_derived(self, source_digest: str, name: str, data: bytes) -> None:
        relative = self.derived_key(source_digest, name)
        try:
            self._publish(self._path(relative), data)
        except (PermissionError, FileNotFoundError) as exc:
            raise ConfigError(f"{self.url}: content store is not writable ({_reason(exc)})") from None
        self._cache.put(relative, data)

    def get_derived(self, source_digest: str, name: str) -> bytes | None:
        relative = self.derived_key(source_digest, name)
        data = self._cache.get(relative)
        if data is None:
            try:
                data = bytes(self._fs.cat_file(self._path(relative)))
            except FileNotFoundError:
                return None
            except PermissionError as exc:
                raise ConfigError(f"{self.url}: content store is not readable ({_reason(exc)})") from None
            self._cache.put(relative, data)
        return data

    def delete(self, relative: str) -> None:
        relative = self.check_key(relative)
        prefix = self.derived_prefix(self.digest_of(relative))
        self._cache.discard(relative)
        self._cache.discard_prefix(prefix + "/")
        try:
            self._fs.rm_file(self._path(relative))
        except FileNotFoundError:
            pass
        derived = self._fs.find(self._path(prefix))
        if derived:
            self._fs.rm(derived)

    def exists(self, relative: str) -> bool:
        return bool(self._fs.exists(self._path(self.check_key(relative))))

    def _path(self, relative: str) -> str:
        return f"{self._root}/{relative}" if self._root else relative

    def _publish(self, path: str, data: bytes) -> None:
        """Make ``data`` appear under ``path`` all at once, or not at all."""
        self._publish_with(path, lambda target, **kw: self._fs.pipe_file(target, data, **kw))

    def _publish_file(self, path: str, source: Path) -> None:
        """Like ``_publish`` for a file on disk, uploaded from it (a multipart upload past 2 parts)."""
        self._publish_with(path, lambda target, **kw: self._fs.put_file(str(source), target, **kw))

    def _publish_with(self, path: str, write: Callable[..., Any]) -> None:
        if self._atomic_put:
            write(path, **({"chunksize": self.part_size} if self.part_size else {}))
            return
        tmp = self._path(f".tmp/{uuid.uuid4().hex}")
        try:
            write(tmp)
            self._fs.mv(tmp, path)
        except BaseException:
            try:
                self._fs.rm_file(tmp)
            except OSError:
                pass
            raise


def _rebuild(url: str, options: dict[str, Any], cache_bytes: int, part_size: int | None) -> FsspecContentStore:
    return FsspecContentStore(url, options, cache_bytes=cache_bytes, part_size=part_size)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class _LruBytes:
    """A thread-safe LRU of immutable byte strings, bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:  # one large blob must not flush everything else
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._size -= len(old) if old is not None else 0
            self._entries[key] = data
            self._size += len(data)
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)

    def discard(self, key: str) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._size -= len(old) if old is not None else 0

    def discard_prefix(self, prefix: str) -> None:
        with self._lock:
            for key in [k for k in self._entries if k.startswith(prefix)]:
                self._size -= len(self._entries.pop(key))
