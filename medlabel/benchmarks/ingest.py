"""`medlabel bench ingest`: ``medlabel ingest`` against de-identification alone, on the same files.

Method (figures in docs/benchmarks.md): the bench writes a realistic intake folder (``files`` files,
cycling through the mix below, every file with its own patient and PHI in the header), then in one
process (both paths run in one process: the same number of processes):

* ``deid``: ``deid.deidentify_bytes`` of every file read from disk, default options (pixel scanning
  on), outputs kept in memory and dropped -- the de-identification alone;
* ``ingest``: ``services.ingest.ingest_paths`` (what ``medlabel ingest``, the Ingest page and the job
  call) of the same folder into a fresh SQLite installation with a DenseNet-sized (224x224) model
  registered, so ingest also keeps each released item's model rendition, as it does in production.

Before either is timed, one file is de-identified (``warm_up_s``: imports and the text detector's
model, which both paths share in the process). The two are then interleaved (deid, ingest, deid,
ingest ...; ``repeats`` each into fresh installations) and the medians reported. ``breakdown``
splits the median ingest run's seconds per file into the de-identification, the content store (hash
+ write + fsync), the model renditions, and the rest (reading the file, the item row, audit event
and commit), by timing those calls inside the run.

Mix, per 10 files: 2 CR 2000x2000 (16-bit, 12 stored, MONOCHROME1), 2 DX 2000x2400 (16-bit, 14
stored), 2 CT 512x512 slices of one series (signed 16-bit, rescale to HU), 1 JPEG Baseline DICOM
(8-bit 2000x2000), 1 JPEG 2000 lossless DICOM (2000x2000, 12-bit), 1 PNG photo (1024x1024 grey),
1 JPEG photo (2000x1500 RGB with EXIF).
"""

from __future__ import annotations

import io
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

MIX = ("CR", "DX", "CT", "CR", "DX", "CT", "JPEG", "J2K", "PNG", "PHOTO")
PROJECT = "ingest-bench"


def _dicom(kind: str, index: int, rng: Any, size: int = 2000) -> bytes:
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid

    from medlabel.benchmarks.prelabel import _chest

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2" if kind == "CT" else "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(f"{index}.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    patient = index // 2 if kind == "CT" else index
    ds.PatientName = f"Doe^Jane{patient:05d}"
    ds.PatientID = f"MRN{patient:07d}"
    ds.PatientBirthDate = "19650412"
    ds.PatientSex = "F"
    ds.StudyDate, ds.StudyTime = "20240105", "101500"
    ds.AccessionNumber = f"ACC{index:06d}"
    ds.InstitutionName = "St Example Hospital"
    ds.ReferringPhysicianName = "Smith^John"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.9.{patient}"
    ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.9.{patient}.1"
    ds.StudyDescription = f"Chest for Jane Doe {patient}"
    ds.Modality = "CT" if kind == "CT" else ("DX" if kind == "DX" else "CR")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    if kind == "CT":
        side = min(512, size)
        yy, xx = np.mgrid[-1:1:side * 1j, -1:1:side * 1j]
        body = (xx ** 2 + yy ** 2 < 0.8).astype(np.float32)
        hu = body * (40 + 20 * rng.standard_normal((side, side))) - 1000 * (1 - body)
        pixels = np.clip(hu + 1024, -1024, 3071).astype(np.int16)
        ds.Rows, ds.Columns = side, side
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 1, -1024, 40, 400
        ds.InstanceNumber = index % 2 + 1
        ds.PixelData = pixels.tobytes()
    else:
        height = size * 6 // 5 if kind == "DX" else size
        base = _chest(height, size)
        bits = 8 if kind == "JPEG" else (14 if kind == "DX" else 12)
        top = (1 << bits) - 1
        values = base * 0.8 * top + rng.normal(0.0, 0.02 * top, base.shape) + 0.1 * top
        pixels = np.clip(values, 0, top).astype(np.uint8 if bits == 8 else np.uint16)
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = 8 if bits == 8 else 16
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, 0
        ds.WindowCenter, ds.WindowWidth = 0.5 * top, 0.9 * top
        if kind == "CR":
            ds.PhotometricInterpretation = "MONOCHROME1"
            pixels = (top - pixels).astype(np.uint16)
        if kind == "JPEG":
            from PIL import Image

            out = io.BytesIO()
            Image.fromarray(pixels).save(out, format="JPEG", quality=90)
            ds.PixelData = encapsulate([out.getvalue()])
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
            ds.LossyImageCompression = "01"
        elif kind == "J2K":
            ds.PixelData = pixels.tobytes()
            ds.compress(JPEG2000Lossless, pixels)
        else:
            ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _photo(kind: str, index: int, rng: Any, size: int = 2000) -> bytes:
    import numpy as np
    from PIL import Image

    from medlabel.benchmarks.prelabel import _chest

    out = io.BytesIO()
    if kind == "PNG":
        side = size // 2
        grey = np.clip(_chest(side, side) * 220 + rng.normal(0, 6, (side, side)) + 10, 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(out, format="PNG")
    else:
        height = size * 3 // 4
        base = _chest(height, size)
        rgb = np.clip(np.stack([base * 200 + 30, base * 180 + 40, base * 170 + 50], axis=-1)
                      + rng.normal(0, 4, (height, size, 3)), 0, 255).astype(np.uint8)
        exif = Image.Exif()
        exif[0x010F] = "PhoneMaker"
        exif[0x0110] = f"Phone {index}"
        exif[0x0132] = "2024:01:05 10:15:00"
        Image.fromarray(rgb).save(out, format="JPEG", quality=90, exif=exif)
    return out.getvalue()


def write_corpus(folder: Path, files: int, seed: int = 0, size: int = 2000) -> dict[str, int]:
    """``files`` intake files in ``folder`` (the mix of the module docstring at ``size`` = 2000; other
    sizes scale the projection images, for tests); returns counts per kind."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(files):
        kind = MIX[index % len(MIX)]
        data = _photo(kind, index, rng, size) if kind in ("PNG", "PHOTO") else _dicom(kind, index, rng, size)
        suffix = {"PNG": ".png", "PHOTO": ".jpg"}.get(kind, ".dcm")
        (folder / f"{index:05d}-{kind.lower()}{suffix}").write_bytes(data)
        counts[kind] = counts.get(kind, 0) + 1
    return counts


@contextmanager
def _timed(obj: Any, attr: str, totals: dict[str, float], key: str) -> Iterator[None]:
    """Add the seconds spent in ``obj.attr`` to ``totals[key]`` while the block runs."""
    original = getattr(obj, attr)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0

    setattr(obj, attr, wrapper)
    try:
        yield
    finally:
        setattr(obj, attr, original)


def warm_up(paths: list[Path], key: bytes) -> float:
    """Load what both paths share once per process before either is timed (the engine's imports, the
    text detector's model): otherwise the first timed run, de-identification alone, pays it. Seconds."""
    import deid

    t0 = time.perf_counter()
    for path in paths[:1]:
        try:
            deid.deidentify_bytes(path.read_bytes(), key=key, name=path.name, options=deid.DeidOptions())
        except Exception:  # noqa: BLE001 - a refused file still warmed the imports; both paths refuse it alike
            pass
    from deid.pixels import default_detector

    default_detector()
    return time.perf_counter() - t0


def deid_only(paths: list[Path], key: bytes) -> tuple[float, list[str]]:
    """Seconds to de-identify every file (read from disk, default options); the statuses."""
    import deid

    statuses = []
    t0 = time.perf_counter()
    for path in paths:
        result = deid.deidentify_bytes(path.read_bytes(), key=key, name=path.name, options=deid.DeidOptions())
        statuses.append(result.status)
    return time.perf_counter() - t0, statuses


def ingest_once(folder: Path, parent: Path | None, model: bytes) -> tuple[float, dict[str, float], list[str]]:
    """Seconds of ``ingest_paths`` over ``folder`` into a fresh installation, the per-step seconds and
    the outcome statuses (one per file, in file order)."""
    import deid
    import services.ingest as ingest_service
    from medlabel.benchmarks.installation import throwaway_installation
    from medlabel.benchmarks.prelabel import CHEXNET_LABELS, IMAGENET
    from services import authz
    from services.models import register_model
    from services.projects import LabelSpec, ProjectSpec, create_project

    with throwaway_installation("medlabel-bench-ingest-", parent=parent) as ctx:
        pid = create_project(ctx, ProjectSpec(name=PROJECT, task_type="multi_label",
                                              labels=(LabelSpec("finding", "1"), LabelSpec("none", "2"))))
        register_model(ctx, model, name="bench-densenet", labels=list(CHEXNET_LABELS), meta=dict(IMAGENET))
        steps: dict[str, float] = {}
        with (_timed(deid, "deidentify_bytes", steps, "deid"), _timed(ctx.store, "put", steps, "store"),
              _timed(ingest_service, "_save_model_renditions", steps, "renditions")):
            t0 = time.perf_counter()
            report = ingest_service.ingest_paths(ctx, pid, [folder], actor=authz.LOCAL_ADMIN)
            seconds = time.perf_counter() - t0
    statuses = [o.status for o in report.outcomes]
    return seconds, steps, statuses


def run(files: int = 60, repeats: int = 2, seed: int = 0, data_dir: Path | None = None,
        size: int = 2000) -> dict[str, Any]:
    from medlabel.benchmarks.prelabel import model_bytes

    model = model_bytes("densenet121")[0]
    key = os.urandom(32)
    with tempfile.TemporaryDirectory(prefix="medlabel-bench-ingest-files-", dir=data_dir) as tmp:
        folder = Path(tmp) / "intake"
        t0 = time.perf_counter()
        counts = write_corpus(folder, files, seed, size)
        corpus_s = time.perf_counter() - t0
        from services.ingest import iter_files

        paths = list(iter_files([folder]))  # the very files, in the very order, that ingest_paths reads
        total_bytes = sum(p.stat().st_size for p in paths)
        warm_up_s = warm_up(paths, key)
        deid_runs, ingest_runs = [], []
        for _ in range(repeats):
            seconds, deid_statuses = deid_only(paths, key)
            deid_runs.append(seconds)
            ingest_runs.append(ingest_once(folder, data_dir, model))
    ingest_seconds = [s for s, _, _ in ingest_runs]
    median_ingest = statistics.median(ingest_seconds)
    deid_s = statistics.median(deid_runs)
    _, steps, statuses = ingest_runs[sorted(range(repeats), key=ingest_seconds.__getitem__)[repeats // 2]]
    seconds_of = sorted(ingest_seconds)[repeats // 2]
    store_s = steps.get("store", 0.0)
    breakdown = {"deid_ms_per_file": steps.get("deid", 0.0), "store_ms_per_file": store_s,
                 "renditions_ms_per_file": steps.get("renditions", 0.0)}
    rest = seconds_of - sum(breakdown.values())
    breakdown["rows_read_and_rest_ms_per_file"] = rest
    breakdown = {k: round(v * 1000 / len(paths), 1) for k, v in breakdown.items()}
    return {
        "files": len(paths), "bytes": total_bytes, "mix": counts, "repeats": repeats,
        "ingest_files_per_s": round(len(paths) / median_ingest, 2), "deid_files_per_s": round(len(paths) / deid_s, 2),
        "ratio": round(deid_s / median_ingest, 3),
        "ingest_runs_s": [round(s, 2) for s in ingest_seconds], "deid_runs_s": [round(s, 2) for s in deid_runs],
        "breakdown": breakdown, "ingest_statuses": _count(statuses), "deid_statuses": _count(deid_statuses),
        "processes": 1, "size": size, "corpus_s": round(corpus_s, 1), "warm_up_s": round(warm_up_s, 2),
        "load_average": round(os.getloadavg()[0], 2),
    }


def _count(statuses: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for status in statuses:
        out[status] = out.get(status, 0) + 1
    return out


@click.command("ingest")
@click.option("--files", default=60, show_default=True, type=click.IntRange(1, 100_000),
              help="Intake files (cycling through the realistic mix).")
@click.option("--repeats", default=2, show_default=True, type=click.IntRange(1, 20),
              help="Interleaved de-identification and ingest runs (medians reported).")
@click.option("--seed", default=0, show_default=True)
@click.option("--size", default=2000, show_default=True, type=click.IntRange(64, 4096),
              help="Side of the projection images (2000 is the realistic mix; smaller for quick checks).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the temporary folders go (default: the system temp folder).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(files: int, repeats: int, seed: int, size: int, data_dir: Path | None, as_json: bool) -> None:
    """`medlabel ingest` against de-identification alone on the same realistic files, one process each."""
    result = run(files, repeats, seed, data_dir, size)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['files']} files: ingest {result['ingest_files_per_s']} files/s, de-identification "
               f"{result['deid_files_per_s']} files/s, ratio {result['ratio']}")
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in result["breakdown"].items()))

