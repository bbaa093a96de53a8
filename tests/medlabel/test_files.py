"""medlabel.files.write_atomic: all the bytes under the name, or nothing changed and no temporary left."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medlabel.files import write_atomic


@pytest.mark.parametrize("durable", [True, False])
def test_write_atomic_creates_parents_and_replaces(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "a" / "b" / "out.bin"
    write_atomic(target, b"first", durable=durable)
    write_atomic(target, b"second", durable=durable)
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new", suffix=".dcm")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]
