"""`medlabel deid SRC DST`: names, manifest, determinism, bad inputs, key files."""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
from pathlib import Path

from deid.leaks import find_leaks
from medlabel.benchmarks.deid_corpus import plant, real, study_pair


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _deid(src: Path, dst: Path, key: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    return subprocess.run([sys.executable, "-m", "medlabel.cli", "deid", str(src), str(dst), "--key-file", str(key),
                           "--workers", "2", *extra], capture_output=True, text=True, env=env, timeout=300)


def test_folder_run_is_safe_deterministic_and_reports_bad_files(tmp_path: Path) -> None:
    src = tmp_path / "src" / "Quixote_Dulcinea_MRN-7781-QX"  # PHI in folder and file names
    (src / "nested").mkdir(parents=True)
    a, b = study_pair()
    (src / "Dulcinea Quixote 1.dcm").write_bytes(a.data)
    (src / "nested" / "Quixote-2").write_bytes(b.data)  # DICOM without a suffix
    (src / "empty.dcm").write_bytes(b"")
    (src / "notes.txt").write_text("not an image")
    (src / "cut.dcm").write_bytes(plant(real("MR_small.dcm"), "C").data[:3000])
    key = tmp_path / "project.key"

    first = _deid(tmp_path / "src", tmp_path / "out1", key)
    assert first.returncode == 1  # some files were refused
    assert "3 refused" in first.stdout
    written, flagged = (int(x) for x in __import__("re").search(r"(\d+) written, (\d+) flagged", first.stdout).groups())
    assert written + flagged == 2  # small CTs may be flagged: the detector marks anatomy as a large text region
    for bad, reason in (("empty.dcm", "empty file"), ("notes.txt", "neither DICOM nor a readable image"),
                        ("cut.dcm", "past the end of the file")):  # one line each: `path: reason`
        assert any(line.startswith(str(src / bad) + ": ") and reason in line
                   for line in first.stderr.splitlines()), first.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32

    out = _tree(tmp_path / "out1")
    assert sorted(Path(p).suffix for p in out) == [".csv", ".dcm", ".dcm"]  # nothing partial, no temp files
    blob = "\n".join(out).encode() + b"\n".join(out.values())
    assert find_leaks(blob, a.values | b.values | {"Quixote", "Dulcinea", "MRN-7781-QX"}) == []
    manifest = list(csv.DictReader((tmp_path / "out1" / "manifest.csv").read_text().splitlines()))
    assert len(manifest) == 2 and len({r["study_uid"] for r in manifest}) == 1
    assert all(r["patient_id"].startswith("ML") for r in manifest)

    _deid(tmp_path / "src", tmp_path / "out2", key)
    assert _tree(tmp_path / "out2") == out  # same key, byte-identical outputs and names


def test_missing_installation_key_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env["MEDLABEL_DATA_DIR"] = str(tmp_path / "nowhere")
    (tmp_path / "src").mkdir()
    result = subprocess.run([sys.executable, "-m", "medlabel.cli", "deid", str(tmp_path / "src"),
                             str(tmp_path / "dst")], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: ") and "medlabel init" in result.stderr


def test_short_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "short.key"
    key.write_bytes(b"too short")
    (tmp_path / "src").mkdir()
    result = _deid(tmp_path / "src", tmp_path / "dst", key)
    assert result.returncode == 1 and "at least 32" in result.stderr and "short.key" in result.stderr
