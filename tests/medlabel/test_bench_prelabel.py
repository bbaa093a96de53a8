"""`medlabel bench prelabel` end to end on a tiny corpus: the JSON it prints and its corpus."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from PIL import Image

from medlabel.benchmarks import prelabel as bench


@pytest.mark.bench
@pytest.mark.parametrize(("model", "images", "batch"), [("demo", 7, 3), ("densenet121", 4, 2)])
def test_tiny_run_prints_the_figures(tmp_path: Path, model: str, images: int, batch: int) -> None:
    result = CliRunner().invoke(bench.command, ["--json", "--model", model, "--images", str(images),
                                                "--batch-size", str(batch), "--workers", "1",
                                                "--dicom-size", "96", "--repeats", "2",
                                                "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["model"], out["images"], out["batch_size"], out["workers"]) == (model, images, batch, 1)
    assert out["predicted"] == [images] * 3 and out["failed"] == 0 and out["repeats"] == 2
    # densenet121's versions have their own weights: every run loads its model, the cold run too (the raw
    # runs' session is not in its cache); the demo model is trained, so its versions share one load
    assert out["model_loads_per_run"] == ([1, 1, 1] if model == "densenet121" else [1, 0, 0])
    assert out["raw_images_per_s"] > 0 and out["pipeline_images_per_s"] > 0 and out["cold_pipeline_images_per_s"] > 0
    assert out["ratio"] == pytest.approx(out["pipeline_images_per_s"] / out["raw_images_per_s"], rel=0.01)
    assert out["cold_ratio"] == pytest.approx(out["cold_pipeline_images_per_s"] / out["cold_raw_images_per_s"],
                                              rel=0.01)
    raws, warm = out["raw_runs_images_per_s"], out["pipeline_runs_images_per_s"]
    assert len(raws) == 4 and len(warm) == 2 and len(out["ratio_per_repeat"]) == 2
    assert out["cold_raw_images_per_s"] == pytest.approx((raws[0] + raws[1]) / 2, rel=0.01)
    assert out["raw_images_per_s"] == pytest.approx(sorted(raws[1:])[1], rel=0.01)  # the median
    assert out["ratio_per_repeat"][0] == pytest.approx(warm[0] / ((raws[1] + raws[2]) / 2), rel=0.01)
    assert out["corpus"]["dicom"] + out["corpus"]["png"] == images and out["corpus"]["dicom"] >= 2
    cold, warm = out["breakdown"]["cold"], out["breakdown"]["warm"]
    assert cold["cache_writes"] == images and cold["cache_hits"] == 0 and cold["decode_s"] > 0
    assert warm["cache_hits"] == images and warm["decode_s"] == 0  # the renditions kept by the first pass
    for part in (cold, warm):
        assert part["inference_s"] > 0 and part["write_s"] > 0 and part["wall_s"] >= part["inference_s"]
    assert not list(tmp_path.iterdir())  # the temporary data folder is gone
    rendition = out["ingest_rendition_ms_per_item"]
    assert set(rendition) == {"dicom", "photo"} and all(ms > 0 for ms in rendition.values())


def test_densenet_versions_have_different_weights() -> None:
    first, second = bench.model_bytes("densenet121", seed=0)[0], bench.model_bytes("densenet121", seed=1)[0]
    assert first != second and len(first) == len(second)  # same model, other weights: each run loads its own


def test_corpus_files_are_the_realistic_mix() -> None:
    corpus = bench._Corpus(dicom_size=120)  # noqa: SLF001 - the generator behind build_corpus
    cr, kind, width, height = corpus.dicom(0)
    ds = pydicom.dcmread(io.BytesIO(cr))
    assert (kind, ds.Modality, ds.PhotometricInterpretation, ds.BitsStored) == ("CR", "CR", "MONOCHROME1", 12)
    assert (ds.Columns, ds.Rows) == (width, height) == (120, 120) and ds.pixel_array.dtype == np.uint16
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian  # uncompressed
    dx = pydicom.dcmread(io.BytesIO(corpus.dicom(1)[0]))
    assert (dx.Modality, dx.PhotometricInterpretation, dx.VOILUTFunction, dx.Rows) == ("DX", "MONOCHROME2", "SIGMOID",
                                                                                     144)
    assert float(dx.RescaleSlope) == 0.5 and float(dx.RescaleIntercept) == -100
    png, _, w, h = corpus.png(2)
    with Image.open(io.BytesIO(png)) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "L", (w, h))
    assert corpus.dicom(3)[0] != corpus.dicom(5)[0]  # every file differs
