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
