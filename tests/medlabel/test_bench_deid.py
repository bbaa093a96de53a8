"""The deid bench's judge is independent of the engine: every element, every level, withheld apart."""

from __future__ import annotations

import io

import numpy as np
import pydicom
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
    assert all("int(sys.argv[3])" in script for script in bench.PEER_SCRIPTS.values())  # --workers processes
    assert bench.PEER_VERSIONS == {"dicognito": "0.19.0", "pydicom-deid": "0.4.13"}
    makefile = (bench.ROOT / "Makefile").read_text()
    assert "'dicognito==0.19.0'" in makefile and "'deid==0.4.13'" in makefile
