"""The content store: content-addressed, stored once, atomic, confined to its root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from db import ContentStore
from medlabel.errors import ConfigError, NotFoundError


def test_put_is_content_addressed_and_deduplicated(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest, rel = store.put(b"pixels", ".png")
    assert digest == hashlib.sha256(b"pixels").hexdigest()
    assert rel == f"{digest[:2]}/{digest[2:4]}/{digest}.png"
    assert store.get(rel) == b"pixels"
    again = store.put(b"pixels", ".png")
    assert again == (digest, rel)
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert files == [tmp_path / "store" / rel]


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (disk full) leaves no file and says which store refused it."""
    store = ContentStore(tmp_path / "store")

    def boom(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(ConfigError, match=r"store: content store is not writable \(No space left on device\)"):
        store.put(b"half", ".dcm")
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def test_missing_and_escaping_paths(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    with pytest.raises(NotFoundError, match="not in the content store"):
        store.get("aa/bb/" + "a" * 64)
    with pytest.raises(ValueError, match="escapes"):
        store.get("../../etc/passwd")
    with pytest.raises(ValueError, match="sha256"):
        store.path_for("not-a-digest")


def test_derived_renditions_are_filed_under_their_source_and_deleted_with_it(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    digest, rel = store.put(b"dicom bytes", ".dcm")
    store.put_derived(digest, "display/0/None/1024", b"png")
    assert store.get_derived(digest, "display/0/None/1024") == b"png"
    assert store.get_derived(digest, "other") is None
    store.delete(rel)
    assert not store.exists(rel)
    assert store.get_derived(digest, "display/0/None/1024") is None
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


# --- writes killed mid-way leave `.tmp-*` files: `sweep` removes them, never a live write or a blob ---

_KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from db.store import ContentStore

def hang(src, dst):  # the bytes are on disk under .tmp-*, the rename never comes
    print("written", flush=True)
    time.sleep(600)

os.replace = hang
ContentStore(Path(sys.argv[1])).put(os.urandom(1 << 20), ".png")
"""


def test_sweep_removes_what_a_killed_write_left_and_nothing_else(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    root = tmp_path / "store"
    store = ContentStore(root)
    _, kept = store.put(b"a stored blob", ".dcm")
    with subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(root)], stdout=subprocess.PIPE,
                          cwd=Path(__file__).resolve().parents[2]) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"written\n"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    (left,) = [p for p in root.rglob(".tmp-*")]  # what kill -9 leaves behind
    assert left.stat().st_size == 1 << 20
    assert store.sweep() == 0  # fresh: it could be a write in progress in another process
    old = time.time() - 2 * 3600
    os.utime(left, (old, old))
    live = root / "ab" / "cd" / ".tmp-live.png"  # a write in progress elsewhere
    live.parent.mkdir(parents=True)
    live.write_bytes(b"half")
    assert store.sweep() == 1
    assert not left.exists() and live.exists()
    assert store.get(kept) == b"a stored blob"
    assert store.sweep(min_age_s=0) == 1 and not live.exists()


def test_sweep_on_a_store_never_written(tmp_path: Path) -> None:
    assert ContentStore(tmp_path / "nothing-yet").sweep() == 0


def test_put_file_streams_hashes_and_deduplicates(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "store")
    source = tmp_path / "model.onnx"
    data = bytes(range(256)) * 9000  # > 2 chunks
    source.write_bytes(data)
    digest, rel = store.put_file(source, ".onnx")
    assert digest == hashlib.sha256(data).hexdigest() and rel.endswith(f"{digest}.onnx")
    assert store.get(rel) == data
    assert store.put_file(source, ".onnx") == (digest, rel)  # stored once
    assert not list((tmp_path / "store").rglob(".tmp-*"))


def test_put_file_past_its_limit_stores_nothing(tmp_path: Path) -> None:
    from medlabel.errors import InputError

    store = ContentStore(tmp_path / "store")
    source = tmp_path / "big.onnx"
    source.write_bytes(b"x" * (3 << 20))
    with pytest.raises(InputError, match="big.onnx: larger than the limit of 2 MiB"):
        store.put_file(source, ".onnx", max_bytes=2 << 20)
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()]


def test_init_and_store_sweep_remove_old_leftovers(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys
    import time

    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")},
           "MEDLABEL_DATA_DIR": str(tmp_path / "data")}

    def medlabel(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "medlabel.cli", *args], capture_output=True, text=True,
                              env=env, cwd=Path(__file__).resolve().parents[2], timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def leftover(name: str, age_s: float) -> Path:
        path = tmp_path / "data" / "store" / "ab" / "cd" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a blob")
        os.utime(path, (time.time() - age_s, time.time() - age_s))
        return path

    old, fresh = leftover(".tmp-old.dcm", 7200), leftover(".tmp-fresh.dcm", 0)
    assert "removed 1 temporary files left in the content store" in medlabel("init")
    assert not old.exists() and fresh.exists()
    assert medlabel("store", "sweep").strip().endswith("removed 0 leftover temporary files")
    assert medlabel("store", "sweep", "--min-age-minutes", "0").strip().endswith("removed 1 leftover temporary files")
    assert not fresh.exists()
