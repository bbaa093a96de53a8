"""`medlabel bench ingest` on tiny files: both paths see the same files; the corpus is the stated mix."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image

from medlabel.benchmarks import ingest as bench

pytestmark = pytest.mark.bench


def test_corpus_is_the_realistic_mix(tmp_path: Path) -> None:
    counts = bench.write_corpus(tmp_path, 10, size=128)
    assert counts == {"CR": 2, "DX": 2, "CT": 2, "JPEG": 1, "J2K": 1, "PNG": 1, "PHOTO": 1}
    files = sorted(tmp_path.iterdir())
    by_kind = {f.name.split("-", 1)[1].split(".")[0]: f for f in files}
    cr = pydicom.dcmread(by_kind["cr"])
    assert (cr.PhotometricInterpretation, cr.BitsAllocated, cr.BitsStored, cr.Rows) == ("MONOCHROME1", 16, 12, 128)
    dx = pydicom.dcmread(by_kind["dx"])
    assert (dx.Rows, dx.Columns, dx.BitsStored) == (153, 128, 14)
    ct = pydicom.dcmread(by_kind["ct"])
    assert (ct.Modality, ct.PixelRepresentation, float(ct.RescaleIntercept)) == ("CT", 1, -1024.0)
    assert pydicom.dcmread(by_kind["jpeg"]).file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    j2k = pydicom.dcmread(by_kind["j2k"])
    assert j2k.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless and j2k.pixel_array.shape == (128, 128)
    assert "Doe^Jane" in str(cr.PatientName)  # PHI for de-identification to remove
    with Image.open(by_kind["photo"]) as photo:
        assert photo.format == "JPEG" and photo.mode == "RGB" and photo.getexif()
    with Image.open(io.BytesIO(by_kind["png"].read_bytes())) as png:
        assert png.format == "PNG" and png.mode == "L"


def test_both_paths_process_the_same_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench.command, ["--files", "10", "--repeats", "1", "--size", "96", "--data-dir",
                                                str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["files"] == 10 and sum(out["mix"].values()) == 10 and out["size"] == 96 and out["bytes"] > 0
    assert sum(out["ingest_statuses"].values()) == sum(out["deid_statuses"].values()) == 10
    assert out["ingest_statuses"] == out["deid_statuses"]  # the same files, the same verdicts
    assert out["warm_up_s"] > 0  # the detector loaded before the first timed run, not inside it
    assert out["ratio"] == pytest.approx(out["ingest_files_per_s"] / out["deid_files_per_s"], rel=0.02)
    steps = out["breakdown"]
    assert steps["deid_ms_per_file"] > 0 and steps["store_ms_per_file"] > 0 and steps["renditions_ms_per_file"] > 0
    total_ms = out["ingest_runs_s"][0] * 1000 / 10
    assert sum(steps.values()) == pytest.approx(total_ms, abs=1.0)
    assert not list(tmp_path.iterdir())  # temporary folders removed
