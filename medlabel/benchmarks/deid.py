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
from contextlib import ExitStack
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
CHUNK = 8  # files handed to a worker at a time, for every engine
# The harness every peer runs in (medlabel's own, ``_run_ours``, does the same with ProcessPoolExecutor):
# ``workers`` forked processes, each set up once (imports, the engine's objects) before the clock starts,
# then every file a task of its own, handed out ``CHUNK`` at a time; the clock stops when the last output
# is on disk. A file that fails has no output (counted as withheld).
_PEER_MAIN = """
import multiprocessing, sys, time, pathlib
src, dst, workers = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
CHUNK = @CHUNK@
def ready(_):
    return None
def work(f):
    try:
        anonymize(f)
    except Exception:
        pass  # no output: counted as withheld
if __name__ == '__main__':
    files = sorted(src.glob('*.dcm'))
    ctx = multiprocessing.get_context('fork')  # workers inherit the imports
    with ctx.Pool(workers, initializer=setup) as pool:
        pool.map(ready, range(workers * 4), chunksize=1)  # workers started and set up before the clock
        t0 = time.perf_counter()
        for _ in pool.imap_unordered(work, files, chunksize=CHUNK):
            pass
        print(time.perf_counter() - t0)
""".replace("@CHUNK@", str(CHUNK))
PEER_SCRIPTS = {
    "dicognito": """
import pydicom
from dicognito.anonymizer import Anonymizer
def setup():
    global anonymizer
    anonymizer = Anonymizer()  # its defaults; one per process, as its command line uses one per run
def anonymize(f):
    ds = pydicom.dcmread(f)
    anonymizer.anonymize(ds)
    ds.save_as(dst / f.name)
""" + _PEER_MAIN,
    "pydicom-deid": """
import logging
logging.disable(logging.CRITICAL)
from deid.config import DeidRecipe
from deid.dicom import replace_identifiers
def setup():
    global recipe
    recipe = DeidRecipe()  # its default recipe (what replace_identifiers loads when given none), loaded once
def anonymize(f):
    # its default options; one file per call, so that one failing file withholds only itself
    replace_identifiers(dicom_files=[str(f)], deid=recipe, save=True, output_folder=str(dst), overwrite=True)
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
        truth[name] = {"values": _realistic_values(folder / name)}
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


def _realistic_values(path: Path) -> list[str]:
    """The identifying values the realistic generator (``medlabel.benchmarks.ingest._dicom``) puts in a file:
    names, ids, the birth date, institution, study description and every instance UID."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    values = [str(ds.PatientName), str(ds.PatientName).split("^")[-1], str(ds.PatientID), str(ds.AccessionNumber),
              str(ds.ReferringPhysicianName), str(ds.PatientBirthDate), str(ds.InstitutionName),
              str(ds.StudyDescription), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    return sorted(set(values))


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
    try:
        result = deid.deidentify_bytes(Path(path).read_bytes(), key=KEY, name=path,
                                       options=deid.DeidOptions(scan_pixels=scan))
    except Exception:  # noqa: BLE001 - refused: no output, counted as withheld (as for the peers)
        return Path(path).name
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
        list(pool.map(_ours, jobs, chunksize=CHUNK))
        elapsed = time.perf_counter() - t0
    return elapsed


def _run_peer(peer: str, corpus: Path, workers: int, out: Path) -> float | str:
    """Seconds for the peer over the corpus (its outputs in ``out``), or the error it ended with."""
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # our deid/ must not shadow theirs
    proc = subprocess.run([str(PEER_PYTHON), "-c", PEER_SCRIPTS[peer], str(corpus), str(out), str(workers)],
                          capture_output=True, cwd=out.parent, text=True, timeout=3600, env=env)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1][:200]
    return float(proc.stdout.strip().splitlines()[-1])


def header_breakdown(folder: Path, limit: int = 200) -> dict[str, Any]:
    """Where medlabel's header-only pass spends its time, per file, in one process (not a timed run):
    milliseconds per file in reading and checking the file (pydicom's parse, structure and nesting
    checks), the pixel data check, the profile (every element, UIDs, dates), writing the output, the
    leak scan, and the rest; for the realistic-size files and pydicom's apart."""
    import deid
    import deid.engine as engine
    from medlabel.benchmarks.ingest import _timed

    steps = {"read": ("read_dicom",), "pixels": ("decode_pixels",),
             "profile": ("process_dataset", "_meta", "clean_descriptors"),
             "write": ("serialise_split",), "leak_scan": ("find_leaks",)}
    out: dict[str, Any] = {}
    paths = sorted(folder.glob("*.dcm"))
    for group, chosen in (("pydicom_files", [p for p in paths if not p.name.startswith("large")][:limit]),
                          ("realistic_files", [p for p in paths if p.name.startswith("large")][:limit])):
        if not chosen:
            continue
        totals: dict[str, float] = {}
        datas = [(p.name, p.read_bytes()) for p in chosen]
        options = deid.DeidOptions(scan_pixels=False)
        deid.deidentify_bytes(datas[0][1], key=KEY, name=datas[0][0], options=options)  # imports
        with ExitStack() as stack:
            for step, names in steps.items():
                for name in names:
                    stack.enter_context(_timed(engine, name, totals, step))
            t0 = time.perf_counter()
            for name, data in datas:
                try:
                    deid.deidentify_bytes(data, key=KEY, name=name, options=options)
                except Exception:  # noqa: BLE001 - a refused file still took its time
                    pass
            total = time.perf_counter() - t0
        per_file = {step: round(totals.get(step, 0.0) * 1000 / len(datas), 2) for step in steps}
        per_file["rest"] = round(total * 1000 / len(datas) - sum(per_file.values()), 2)
        out[group] = {"files": len(datas), "total_ms_per_file": round(total * 1000 / len(datas), 2), **per_file}
    return out


def run(files: int = 500, workers: int = 2, large: int = 20, repeats: int = 1,
        breakdown: bool = True) -> dict[str, Any]:
    """Every engine over the same corpus with ``workers`` processes; the header-only pass and the peers
    ``repeats`` times, interleaved (medians reported), the pixel-scanning pass once."""
    import statistics

    with tempfile.TemporaryDirectory(prefix="medlabel-deid-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        truth = build_corpus(corpus, files, large)
        total = len(truth)
        full_s = _run_ours(corpus, True, workers, Path(tmp) / "medlabel-scan")
        full = _tally(_read_outputs(Path(tmp) / "medlabel-scan", truth), truth)
        engines = ["medlabel (header only)", *PEER_SCRIPTS]
        seconds: dict[str, list[float]] = {name: [] for name in engines}
        errors: dict[str, str] = {}
        last: dict[str, Path] = {}
        for r in range(repeats):
            for name in engines:
                if name in errors:
                    continue
                out = Path(tmp) / f"{name.split()[0]}-{r}"
                if name == "medlabel (header only)":
                    seconds[name].append(_run_ours(corpus, False, workers, out))
                elif not PEER_PYTHON.exists():
                    errors[name] = "missing: run `make bench-peers` to install the peers"
                    continue
                else:
                    got = _run_peer(name, corpus, workers, out)
                    if isinstance(got, str):
                        errors[name] = got
                        continue
                    seconds[name].append(got)
                last[name] = out
        rates = {name: [total / s for s in runs] for name, runs in seconds.items() if runs}
        tallies = {name: _tally(_read_outputs(last[name], truth), truth) for name in rates}
        header_rate = statistics.median(rates["medlabel (header only)"])
        header = tallies["medlabel (header only)"]
        result: dict[str, Any] = {
            "files": total, "large_files": large, "workers": workers, "repeats": repeats,
            "files_per_s": round(total / full_s, 1),
            "header_files_per_s": round(header_rate, 1),
            "leaks": full["leaked"], "withheld": full["withheld"],
            "header_only_leaks": header["leaked"], "header_only_withheld": header["withheld"],
            "engines": {"medlabel (pixel scanning)": {"files_per_s": round(total / full_s, 1), **full},
                        "medlabel (header only)": {"files_per_s": round(header_rate, 1),
                                                   "runs_files_per_s": [round(x, 1) for x in
                                                                        rates["medlabel (header only)"]],
                                                   **header}},
            "peers": {},
        }
        for peer in PEER_SCRIPTS:
            if peer in errors:
                result["peers"][peer] = {"error": errors[peer]}
                continue
            tally = tallies[peer]
            result["peers"][peer] = {"version": PEER_VERSIONS[peer],
                                     "files_per_s": round(statistics.median(rates[peer]), 1),
                                     "runs_files_per_s": [round(x, 1) for x in rates[peer]],
                                     **tally, "leaks": tally["leaked"]}
            result["engines"][f"{peer} {PEER_VERSIONS[peer]} (defaults)"] = result["peers"][peer]
        peers = [p for p in PEER_SCRIPTS if p in rates]
        if peers:
            fastest = max(peers, key=lambda p: statistics.median(rates[p]))
            result["fastest_peer"] = fastest
            result["header_speed_vs_fastest_peer"] = round(header_rate / statistics.median(rates[fastest]), 2)
            # per repeat: the header-only run against the fastest peer's run of the same round
            result["header_speed_vs_fastest_peer_per_repeat"] = [
                round(ours / max(rates[p][i] for p in peers), 2)
                for i, ours in enumerate(rates["medlabel (header only)"]) if all(i < len(rates[p]) for p in peers)]
        if breakdown:
            result["header_breakdown_ms_per_file"] = header_breakdown(corpus)
        result["load_average"] = round(os.getloadavg()[0], 2)
    return result


@click.command("deid")
@click.option("--files", default=500, show_default=True, type=click.IntRange(16, 100_000))
@click.option("--workers", default=2, show_default=True, help="Processes, for every engine alike.")
@click.option("--large", default=20, show_default=True, type=click.IntRange(0, 10_000),
              help="Realistic-size files (2000x2000 16-bit CR/DX with PHI) beside pydicom's.")
@click.option("--repeats", default=1, show_default=True, type=click.IntRange(1, 20),
              help="Interleaved runs of the header-only pass and each peer (medians reported).")
@click.option("--breakdown/--no-breakdown", default=True, show_default=True,
              help="Also time the header-only pass's steps per file, in one process.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(files: int, workers: int, large: int, repeats: int, breakdown: bool, as_json: bool) -> None:
    """De-identification throughput and leaks, side by side with dicognito and pydicom deid."""
    result = run(files, workers, large, repeats, breakdown)
    click.echo(json.dumps(result) if as_json else json.dumps(result, indent=2))
