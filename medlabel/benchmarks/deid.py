"""`medlabel bench deid`: throughput and leaks of medlabel's engine against dicognito and pydicom deid.

Method: a corpus of ``files`` DICOM files made from pydicom's bundled real files (CT, MR, RT plan,
JPEG 2000, RLE MR) with PHI planted in tags, nested sequences and private blocks (each file its own
patient and values), one file in eight an 8- or 16-bit image with a name burned into its pixels.
medlabel runs with both cores (2 worker processes), once with pixel scanning (``files_per_s``) and
once header-only (``header_files_per_s``, which is how the peers work). The peers run in their own
virtualenv (`make bench-peers`; pydicom's ``deid`` package shares our package's name) with their
default settings, one process each, timed from inside their process. A file leaks when any planted
value survives in its header bytes, or when the burned-in name's pixels survive; a file medlabel
withholds (refused) counts as not leaked.
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import click
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
SOURCES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "MR_small_RLE.dcm", "rtdose.dcm",
           "CT_small.dcm")
KEY = bytes(range(32))

PEER_SCRIPTS = {
    "dicognito": """
import sys, time, pathlib, pydicom
from dicognito.anonymizer import Anonymizer
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
files = sorted(src.glob('*.dcm'))
t0 = time.perf_counter()
anonymizer = Anonymizer()
for f in files:
    ds = pydicom.dcmread(f)
    anonymizer.anonymize(ds)
    ds.save_as(dst / f.name)
print(time.perf_counter() - t0)
""",
    "pydicom-deid": """
import sys, time, pathlib, logging
logging.disable(logging.CRITICAL)
from deid.dicom import replace_identifiers
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
files = [str(f) for f in sorted(src.glob('*.dcm'))]
t0 = time.perf_counter()
replace_identifiers(dicom_files=files, save=True, output_folder=str(dst), overwrite=True, strip_sequences=True)
print(time.perf_counter() - t0)
""",
}


def build_corpus(folder: Path, files: int) -> dict[str, dict[str, Any]]:
    """Write the corpus; returns per file the planted values and, for burned-in files, the text box."""
    from medlabel.benchmarks.deid_corpus import dicom_from_array, plant, real, text_image

    truth: dict[str, dict[str, Any]] = {}
    for i in range(files):
        name = f"f{i:05d}.dcm"
        if i % 8 == 7:
            arr = text_image(8 if i % 16 == 7 else 16, text=f"PATIENT {i:05d} DOE")
            data = dicom_from_array(arr, "OT")
            ys, xs = np.nonzero(arr == arr.max())
            truth[name] = {"values": ["Burned^In", "BURN-001"], "text_box": [int(xs.min()), int(ys.min()),
                                                                          int(xs.max()) + 1, int(ys.max()) + 1]}
        else:
            planted = plant(real(SOURCES[i % len(SOURCES)]), f"{i:05d}", patient_id=f"MRN{i:07d}")
            data = planted.data
            truth[name] = {"values": sorted(planted.values)}
        (folder / name).write_bytes(data)
    return truth


def count_leaks(data: bytes | None, truth: dict[str, Any]) -> int:
    """1 when a planted value survives in the header, or the burned-in text's pixels survive."""
    import pydicom

    from deid.leaks import find_leaks

    if data is None:
        return 0
    ds = pydicom.dcmread(io.BytesIO(data))
    box = truth.get("text_box")
    if box is not None and "PixelData" in ds:
        x0, y0, x1, y1 = box
        region = ds.pixel_array[y0:y1, x0:x1]
        if region.max() > np.percentile(ds.pixel_array, 99) * 0.9 and region.max() > region.min():
            return 1
    if "PixelData" in ds:
        del ds.PixelData
    header = io.BytesIO()
    ds.save_as(header)
    return int(bool(find_leaks(header.getvalue(), truth["values"])))


def _ours(job: tuple[str, bool]) -> tuple[str, bytes | None]:
    import deid

    path, scan = job
    result = deid.deidentify_bytes(Path(path).read_bytes(), key=KEY, name=path,
                                   options=deid.DeidOptions(scan_pixels=scan))
    return Path(path).name, result.output


def _run_ours(folder: Path, scan: bool, workers: int) -> tuple[float, dict[str, bytes | None]]:
    jobs = [(str(p), scan) for p in sorted(folder.glob("*.dcm"))]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_ours, jobs[:2]))  # warm the workers (imports, OCR model load)
        t0 = time.perf_counter()
        outputs = dict(pool.map(_ours, jobs, chunksize=8))
        elapsed = time.perf_counter() - t0
    return elapsed, outputs


def run(files: int = 500, workers: int = 2) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="medlabel-deid-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        truth = build_corpus(corpus, files)
        full_s, outputs = _run_ours(corpus, True, workers)
        header_s, header_outputs = _run_ours(corpus, False, workers)
        result: dict[str, Any] = {
            "files": files,
            "files_per_s": round(files / full_s, 1),
            "header_files_per_s": round(files / header_s, 1),
            "leaks": sum(count_leaks(outputs[n], truth[n]) for n in truth),
            "header_only_leaks": sum(count_leaks(header_outputs[n], truth[n]) for n in truth),
            "withheld": sum(1 for o in outputs.values() if o is None),
            "workers": workers,
            "peers": {},
        }
        for peer, script in PEER_SCRIPTS.items():
            if not PEER_PYTHON.exists():
                result["peers"][peer] = {"missing": "run `make bench-peers` to install the peers"}
                continue
            out = Path(tmp) / peer
            out.mkdir()
            proc = subprocess.run([str(PEER_PYTHON), "-c", script, str(corpus), str(out)], capture_output=True, cwd=tmp,
                                  text=True, timeout=1800)
            if proc.returncode != 0:
                result["peers"][peer] = {"error": proc.stderr.strip().splitlines()[-1][:200]}
                continue
            seconds = float(proc.stdout.strip().splitlines()[-1])
            leaks = 0
            for name in truth:
                target = out / name
                leaks += count_leaks(target.read_bytes() if target.exists() else None, truth[name])
            result["peers"][peer] = {"files_per_s": round(files / seconds, 1), "leaks": leaks}
        fastest = max((p.get("files_per_s", 0) for p in result["peers"].values()), default=0)
        if fastest:
            result["header_speed_vs_fastest_peer"] = round(result["header_files_per_s"] / fastest, 2)
    return result


@click.command("deid")
@click.option("--files", default=500, show_default=True, type=click.IntRange(16, 100_000))
@click.option("--workers", default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(files: int, workers: int, as_json: bool) -> None:
    """De-identification throughput and leaks, side by side with dicognito and pydicom deid."""
    result = run(files, workers)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
