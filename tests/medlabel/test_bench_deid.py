"""The deid bench's judge is independent of the engine: every element, every level, withheld apart."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from medlabel.benchmarks import deid as bench
from medlabel.benchmarks.deid_corpus import dicom_from_array

TRUTH = {"values": ["Secret^Name", "MRN0001234"]}


def _file(**build: object) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom_from_array(np.zeros((8, 8), dtype=np.uint8), "OT")))
    for key, value in build.items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_judge_finds_values_at_every_level_and_in_private_bytes() -> None:
    assert bench.judge(_file(), TRUTH) == "clean"
    assert bench.judge(None, TRUTH) == "withheld"  # no output is not a clean output
    assert bench.judge(_file(PatientName="secret^name"), TRUTH) == "leaked"  # case does not hide it
    inner = Dataset()
    inner.PersonName = "Secret^Name"
    middle = Dataset()
    middle.ContentSequence = Sequence([inner])
    assert bench.judge(_file(ReferencedStudySequence=Sequence([middle])), TRUTH) == "leaked"  # two levels down
    ds = pydicom.dcmread(io.BytesIO(_file()))
    block = ds.private_block(0x0011, "ACME 1.0", create=True)
    block.add_new(0x01, "UN", b"id=MRN0001234\x00")
    out = io.BytesIO()
    ds.save_as(out)
    assert bench.judge(out.getvalue(), TRUTH) == "leaked"  # private, undecoded bytes


def test_tally_counts_leaked_and_withheld_apart() -> None:
    truth = {"a.dcm": TRUTH, "b.dcm": TRUTH, "c.dcm": TRUTH}
    outputs = {"a.dcm": _file(), "b.dcm": _file(PatientID="MRN0001234"), "c.dcm": None}
    assert bench._tally(outputs, truth) == {"clean": 1, "leaked": 1, "withheld": 1}  # noqa: SLF001


def test_peers_run_with_their_defaults_and_the_same_processes() -> None:
    assert "strip_sequences" not in bench.PEER_SCRIPTS["pydicom-deid"]
    assert "remove_private" not in bench.PEER_SCRIPTS["pydicom-deid"]
    assert "Anonymizer()" in bench.PEER_SCRIPTS["dicognito"]
    for script in bench.PEER_SCRIPTS.values():
        assert "int(sys.argv[3])" in script  # --workers processes
        # the same harness as medlabel's: set up before the clock, one file a task, CHUNK at a time
        assert script.index("pool.map(ready") < script.index("t0 = time.perf_counter()")
        assert f"CHUNK = {bench.CHUNK}" in script and "imap_unordered(work, files, chunksize=CHUNK)" in script
    assert bench.PEER_VERSIONS == {"dicognito": "0.19.0", "pydicom-deid": "0.4.13"}
    makefile = (bench.ROOT / "Makefile").read_text()
    assert "'dicognito==0.19.0'" in makefile and "'deid==0.4.13'" in makefile


def test_the_realistic_files_truth_names_every_identifier(tmp_path: Path) -> None:
    truth = bench.build_corpus(tmp_path, 16, large=1)
    ds = pydicom.dcmread(tmp_path / "large0000.dcm", stop_before_pixels=True)
    values = truth["large0000.dcm"]["values"]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
                    "ReferringPhysicianName", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert str(ds.data_element(keyword).value) in values, keyword
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (2000, 2000, 16)  # realistic size, 16-bit


@pytest.mark.bench
def test_tiny_run_counts_every_engine_on_the_same_files(tmp_path: Path) -> None:
    out = bench.run(files=16, workers=1, large=1, repeats=2)
    assert out["files"] == 17 and out["workers"] == 1 and out["repeats"] == 2
    for name, engine in out["engines"].items():
        if "error" in engine:
            continue
        assert engine["leaked"] + engine["withheld"] + engine["clean"] == 17, name
    header = out["engines"]["medlabel (header only)"]
    assert len(header["runs_files_per_s"]) == 2 and out["leaks"] == 0
    assert header["leaked"] == 2  # the two burned-in images: no pixel scan in this pass
    steps = out["header_breakdown_ms_per_file"]["pydicom_files"]
    assert steps["files"] == 16 and steps["read"] > 0 and steps["write"] > 0 and steps["profile"] > 0
    if bench.PEER_PYTHON.exists():
        assert out["fastest_peer"] in bench.PEER_SCRIPTS and out["header_speed_vs_fastest_peer"] > 0
        assert len(out["header_speed_vs_fastest_peer_per_repeat"]) == 2
