"""`medlabel bench deid`: throughput and leaks of medlabel's engine against dicognito and pydicom deid.

Method: a corpus of ``files`` DICOM files made from pydicom's bundled real files (CT, MR, RT plan,
JPEG 2000, RLE MR) with PHI planted in tags, nested sequences and private blocks (each file its own
patient and values), one file in eight an 8- or 16-bit image with a name burned into its pixels,
plus ``large`` realistic-size files (2000x2000 16-bit CR with PHI in the header, from the ingest
bench's generator). Every engine runs with ``workers`` processes and writes its outputs to disk:
medlabel with pixel scanning (``files_per_s``) and header-only (``header_files_per_s``); the peers in
their own virtualenv (`make bench-peers`, pinned versions; pydicom's ``deid`` package shares our
package's name) with their own defaults (dicognito's ``Anonymizer()``; deid's ``replace_identifiers``
with its default recipe), the files split over ``workers`` forked processes, timed from inside their
process. The judge is independent of every engine: it reads each output with pydicom and walks every
element at every nesting level (file meta, sequences, private tags; values as text, bytes decoded as
Latin-1) looking for any planted value, and checks that the burned-in name's pixels are gone. Per
engine and pass it counts ``leaked`` files (an output with a planted value or the burned-in text) and
``withheld`` files (no output written) separately.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
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

PEER_VERSIONS = {"dicognito": "0.19.0", "pydicom-deid": "0.4.13"}  # as pinned by `make bench-peers`
_PEER_MAIN = """
import multiprocessing, sys, time, pathlib
src, dst, workers = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
files = sorted(src.glob('*.dcm'))
chunks = [files[i::workers] for i in range(workers)]
if __name__ == '__main__':
    ctx = multiprocessing.get_context('fork')  # workers inherit the imports: no start-up in the timing
    t0 = time.perf_counter()
    with ctx.Pool(workers) as pool:
        pool.map(work, chunks)
    print(time.perf_counter() - t0)
"""
PEER_SCRIPTS = {
    "dicognito": """
import pydicom
from dicognito.anonymizer import Anonymizer
def work(chunk):
    anonymizer = Anonymizer()  # its defaults
    for f in chunk:
        try:
            ds = pydicom.dcmread(f)
            anonymizer.anonymize(ds)
            ds.save_as(dst / f.name)
        except Exception:
            pass  # no output: counted as withheld
""" + _PEER_MAIN,
    "pydicom-deid": """
import logging
logging.disable(logging.CRITICAL)
from deid.dicom import replace_identifiers
def work(chunk):
    for f in chunk:
        try:  # its default recipe and options, one file at a time so one failure withholds one file
            replace_identifiers(dicom_files=[str(f)], save=True, output_folder=str(dst), overwrite=True)
        except Exception:
            pass
""" + _PEER_MAIN,
}


def build_corpus(folder: Path, files: int, large: int = 0) -> dict[str, dict[str, Any]]:
    """Write the corpus; returns per file the planted values and, for burned-in files, the text box."""
    from medlabel.benchmarks.deid_corpus import dicom_from_array, plant, real, text_image
    from medlabel.benchmarks.ingest import _dicom as realistic

    truth: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(5)
    for i in range(large):
        index = 100_000 + 2 * i  # each its own patient (the ingest generator pairs CT slices only)
        name = f"large{i:04d}.dcm"
        (folder / name).write_bytes(realistic("CR" if i % 2 == 0 else "DX", index, rng))
        truth[name] = {"values": [f"Jane{index:05d}", f"MRN{index:07d}", f"ACC{index:06d}", "Smith^John"]}
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


_TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}


def _texts(ds: Any) -> Iterator[str]:
    """Every element's value as text, at every nesting level, private elements and file meta included."""
    meta = getattr(ds, "file_meta", None)
    for dataset in ([meta] if meta is not None else []) + [ds]:
        yield from _walk(dataset)


def _walk(ds: Any) -> Iterator[str]:
    for elem in ds:
        if elem.tag == 0x7FE00010:  # pixel data: judged by the pixel check
            continue
        if elem.VR == "SQ":
            for item in elem.value or ():
                yield from _walk(item)
            continue
        value = elem.value
        if isinstance(value, bytes | bytearray):
            yield bytes(value).decode("latin-1")
        elif isinstance(value, list | tuple) or elem.VM > 1:
            yield "\\".join(str(v) for v in value)
        elif value is not None:
            yield str(value)


def judge(data: bytes | None, truth: dict[str, Any]) -> str:
    """``withheld`` (no output), ``leaked`` (a planted value anywhere in the output's elements, or the
    burned-in text's pixels still there) or ``clean``; independent of every engine's own scan."""
    import pydicom

    if data is None:
        return "withheld"
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ds.decode()
    except Exception:  # noqa: BLE001 - an unreadable output still has to be searched
        text = data.decode("latin-1").lower()
        return "leaked" if any(v.lower() in text for v in truth["values"]) else "clean"
    box = truth.get("text_box")
    if box is not None and "PixelData" in ds:
        x0, y0, x1, y1 = box
        pixels = ds.pixel_array
        region = pixels[y0:y1, x0:x1]
        if region.size and region.max() > np.percentile(pixels, 99) * 0.9 and region.max() > region.min():
            return "leaked"
    wanted = [v.lower() for v in truth["values"]]
    for text in _texts(ds):
        low = text.lower()
        if any(v in low for v in wanted):
            return "leaked"
    return "clean"


def count_leaks(data: bytes | None, truth: dict[str, Any]) -> int:
    """1 when the judge finds a planted value or the burned-in text in the output."""
    return int(judge(data, truth) == "leaked")


def _tally(outputs: dict[str, bytes | None], truth: dict[str, dict[str, Any]]) -> dict[str, int]:
    out = {"leaked": 0, "withheld": 0, "clean": 0}
    for name in truth:
        out[judge(outputs.get(name), truth[name])] += 1
    return out


def _ours(job: tuple[str, bool, str]) -> str:
    import deid

    path, scan, out_dir = job
    result = deid.deidentify_bytes(Path(path).read_bytes(), key=KEY, name=path,
                                   options=deid.DeidOptions(scan_pixels=scan))
    if result.output is not None:  # written to disk, as the peers do
        (Path(out_dir) / Path(path).name).write_bytes(result.output)
    return Path(path).name


def _read_outputs(out: Path, truth: dict[str, Any]) -> dict[str, bytes | None]:
    return {name: (out / name).read_bytes() if (out / name).exists() else None for name in truth}


def _run_ours(folder: Path, scan: bool, workers: int, out: Path) -> float:
    out.mkdir()
    jobs = [(str(p), scan, str(out)) for p in sorted(folder.glob("*.dcm"))]
    warm = Path(tempfile.mkdtemp(dir=out.parent))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_ours, [(j[0], j[1], str(warm)) for j in jobs[:workers]]))  # imports, OCR model load
        t0 = time.perf_counter()
        list(pool.map(_ours, jobs, chunksize=8))
        elapsed = time.perf_counter() - t0
    return elapsed


def run(files: int = 500, workers: int = 2, large: int = 20) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="medlabel-deid-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        truth = build_corpus(corpus, files, large)
        total = len(truth)
        full_s = _run_ours(corpus, True, workers, Path(tmp) / "medlabel-scan")
        header_s = _run_ours(corpus, False, workers, Path(tmp) / "medlabel-header")
        full = _tally(_read_outputs(Path(tmp) / "medlabel-scan", truth), truth)
        header = _tally(_read_outputs(Path(tmp) / "medlabel-header", truth), truth)
        result: dict[str, Any] = {
            "files": total, "large_files": large, "workers": workers,
            "files_per_s": round(total / full_s, 1),
            "header_files_per_s": round(total / header_s, 1),
            "leaks": full["leaked"], "withheld": full["withheld"],
            "header_only_leaks": header["leaked"], "header_only_withheld": header["withheld"],
            "engines": {"medlabel (pixel scanning)": {"files_per_s": round(total / full_s, 1), **full},
                        "medlabel (header only)": {"files_per_s": round(total / header_s, 1), **header}},
            "peers": {},
        }
        for peer, script in PEER_SCRIPTS.items():
            if not PEER_PYTHON.exists():
                result["peers"][peer] = {"missing": "run `make bench-peers` to install the peers"}
                continue
            out = Path(tmp) / peer
            out.mkdir()
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # our deid/ must not shadow theirs
            proc = subprocess.run([str(PEER_PYTHON), "-c", script, str(corpus), str(out), str(workers)],
                                  capture_output=True, cwd=tmp, text=True, timeout=3600, env=env)
            if proc.returncode != 0:
                result["peers"][peer] = {"error": proc.stderr.strip().splitlines()[-1][:200]}
                continue
            seconds = float(proc.stdout.strip().splitlines()[-1])
            tally = _tally(_read_outputs(out, truth), truth)
            result["peers"][peer] = {"version": PEER_VERSIONS[peer], "files_per_s": round(total / seconds, 1),
                                     **tally, "leaks": tally["leaked"]}
            result["engines"][f"{peer} {PEER_VERSIONS[peer]} (defaults)"] = result["peers"][peer]
        fastest = max((p.get("files_per_s", 0) for p in result["peers"].values()), default=0)
        if fastest:
            result["header_speed_vs_fastest_peer"] = round(result["header_files_per_s"] / fastest, 2)
    return result


@click.command("deid")
@click.option("--files", default=500, show_default=True, type=click.IntRange(16, 100_000))
@click.option("--workers", default=2, show_default=True, help="Processes, for every engine alike.")
@click.option("--large", default=20, show_default=True, type=click.IntRange(0, 10_000),
              help="Realistic-size files (2000x2000 16-bit CR/DX with PHI) beside pydicom's.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(files: int, workers: int, large: int, as_json: bool) -> None:
    """De-identification throughput and leaks, side by side with dicognito and pydicom deid."""
    result = run(files, workers, large)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
