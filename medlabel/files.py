"""The one atomic file write, shared by the content store (``db.store.local``) and ``deid.io``.

It sits beside ``medlabel.errors`` at the bottom of the layers: plain ``os`` calls, no settings, so the
pure packages and ``db`` may both import it (pyproject.toml's layer contract).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes, *, durable: bool = True, suffix: str = "") -> None:
    """Make ``data`` appear under ``path`` all at once, or not at all.

    The bytes go to a temporary file in the same folder (created with its parents), which is then
    renamed over ``path``; on any failure the temporary file is removed and ``path`` is unchanged.
    ``durable`` also fsyncs the file before the rename and the folder after it, so the new name
    survives a power cut; caches that can be rebuilt skip that. ``suffix`` ends the temporary name.
    ``OSError`` is raised as is: the caller knows what the file is for and words the message.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
