"""`medlabel bench prelabel`: batch pre-labelling throughput against raw ``session.run``, in one run.

Method (figures and discussion in docs/benchmarks.md):

* Corpus, in a temporary data folder with a SQLite database migrated to head: ``images`` items, two
  in three uncompressed 16-bit DICOM (alternately CR: ``dicom_size`` square, MONOCHROME1, 12 bits
  stored; and DX: ``dicom_size`` x 1.2 ``dicom_size``, MONOCHROME2, 14 bits; both with Rescale
  Slope/Intercept and a Window Center/Width, DX with a SIGMOID VOI LUT function), one in three an
  8-bit grayscale 1024x1024 PNG (NIH ChestX-ray14-like; half of ``dicom_size`` when that is smaller).
  Synthetic chest-like pixels with per-image noise, so every file differs. Bytes go into the content
  store and released items straight into the database (no de-identification: not what is measured).
* Model: ``densenet121`` (``inference.build_densenet121_shaped``, CheXNet-shaped: 224x224x3 in,
  ImageNet mean/std, 14 sigmoid outputs, random weights, built locally) or ``demo`` (the demo's
  logistic regression on PneumoniaMNIST, 28x28x1), registered ``repeats + 1`` times; densenet121's
  versions have different weights (seeds 0..repeats), so each timed run pays its model load
  (``model_loads_per_run``: sessions the run created, 1 each; the raw runs use a session cache of
  their own).
* ``ingest_rendition_ms_per_item``: the median cost per kind of making and storing one item's model
  rendition, as ingest does (measured before the timed runs, under a separate name).
* One-time start (reported as ``startup_s``, not in the rates): the decoding processes (forkserver,
  their imports of the decoders and of the content store's module: about 2-3 s here, once per
  process) and the shared onnxruntime session (one session, ``min(2, cores)`` intra-op threads).
* Order: raw, cold, raw, warm, raw, warm, ..., raw (``repeats`` warm runs), so that every pipeline
  run sits between two raw runs: the machine's load drifts.
* ``raw``: ``session.run`` on ready-made float32 batches of ``batch_size`` of the model's input shape,
  the same number of images, the same session (all its outputs, as the pipeline runs it).
* ``cold``: ``services.models.prelabel`` of version 1 over every item: load the stored bytes, decode
  at model size (Modality LUT, VOI, MONOCHROME1, resized before windowing), preprocess, run,
  write probabilities, uncertainty scores and embeddings; it keeps each item's model rendition.
  ``cold_ratio`` = its rate / the mean of the raw runs before and after it.
* ``pipeline`` (warm): ``prelabel`` of versions 2.. (other weights): the same path, but the model
  renditions kept by the first pass replace decoding -- what every later model, version or variant
  of the same input size does. ``pipeline_images_per_s`` = median warm rate, ``raw_images_per_s`` =
  median of the raw runs from the first warm run on, ``ratio`` = their quotient;
  ``ratio_per_repeat``: each warm run against the mean of the raw runs around it.
* Rates are images / wall seconds of the whole ``prelabel`` call (queries, worker pool start, model
  load from the cache, the final write).
"""

from __future__ import annotations

import io
import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import click

CHEXNET_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")
IMAGENET = {"scaling": "0-1", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
PROJECT = "prelabel-bench"


def _chest(height: int, width: int) -> Any:
    """A smooth chest-like field in 0..1: body ellipse, two darker lungs, a bright spine."""
    import numpy as np

    y, x = np.ogrid[-1.0:1.0:height * 1j, -1.0:1.0:width * 1j]
    body = np.sqrt(np.clip(1.0 - (x / 0.9) ** 2 - (y / 1.05) ** 2, 0.0, 1.0))
    lungs = sum(np.exp(-(((x - cx) / 0.28) ** 2 + ((y + 0.05) / 0.55) ** 2)) for cx in (-0.4, 0.4))
    spine = np.exp(-((x / 0.07) ** 2)) * (np.abs(y) < 0.9)
    return np.clip(0.15 + 0.6 * body - 0.4 * lungs + 0.25 * spine, 0.0, 1.0).astype(np.float32)


class _Corpus:
    """Image bytes of the benchmark's mix, generated deterministically from ``seed``."""

    def __init__(self, dicom_size: int, seed: int = 0) -> None:
        import numpy as np

        self.rng = np.random.default_rng(seed)
        self.shapes = {"CR": (dicom_size, dicom_size), "DX": (int(dicom_size * 1.2), dicom_size)}
        png_side = min(1024, max(64, dicom_size // 2)) if dicom_size < 2048 else 1024
        self.shapes["PNG"] = (png_side, png_side)
        self.base = {k: _chest(*shape) for k, shape in self.shapes.items()}
        self.noise = {k: self.rng.normal(0.0, 1.0, shape).astype(np.float32) for k, shape in self.shapes.items()}

    def _field(self, kind: str) -> Any:
        import numpy as np

        h, w = self.shapes[kind]
        shift = (int(self.rng.integers(0, h)), int(self.rng.integers(0, w)))
        return self.base[kind], np.roll(self.noise[kind], shift, axis=(0, 1))

    def dicom(self, index: int) -> tuple[bytes, str, int, int]:
        import numpy as np
        from pydicom.dataset import FileDataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        kind = "CR" if index % 2 == 0 else "DX"
        base, noise = self._field(kind)
        bits = 12 if kind == "CR" else 14
        top = (1 << bits) - 1
        values = base * (0.8 * top) + noise * (0.02 * top) + 0.1 * top
        if kind == "CR":
            values = top - values  # MONOCHROME1: dense tissue stored low
        pixels = np.clip(values, 0, top).astype(np.uint16)
        pixels[0, :4] = np.frombuffer(index.to_bytes(8, "little"), dtype=np.uint16)  # every file unique
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1" if kind == "CR" else "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(f"{index}.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality = kind
        ds.PatientID = f"BENCH{index // 3:05d}"
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME1" if kind == "CR" else "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
        if kind == "CR":
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "US"
            ds.WindowCenter, ds.WindowWidth = 0.5 * top, 0.85 * top
        else:
            ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 0.5, -100, "US"
            ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 0.25 * top, 0.4 * top, "SIGMOID"
        ds.PixelData = pixels.tobytes()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue(), kind, pixels.shape[1], pixels.shape[0]

    def png(self, index: int) -> tuple[bytes, str, int, int]:
        import numpy as np
        from PIL import Image

        base, noise = self._field("PNG")
        pixels = np.clip(base * 220 + noise * 6 + 10, 0, 255).astype(np.uint8)
        pixels[0, :8] = np.frombuffer(index.to_bytes(8, "little"), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        return out.getvalue(), "OT", pixels.shape[1], pixels.shape[0]


def build_corpus(ctx: Any, project_id: int, images: int, dicom_size: int, seed: int = 0) -> dict[str, int]:
    """Store ``images`` files (2 in 3 DICOM) and insert them as released items; returns the counts."""
    from db.admin import bulk_insert_items
    from services.items import random_key

    corpus = _Corpus(dicom_size, seed)
    rows, counts = [], {"dicom": 0, "png": 0, "bytes": 0}
    for index in range(images):
        is_dicom = index % 3 != 2
        data, modality, width, height = corpus.dicom(index) if is_dicom else corpus.png(index)
        digest, path = ctx.store.put(data, ".dcm" if is_dicom else ".png")
        counts["dicom" if is_dicom else "png"] += 1
        counts["bytes"] += len(data)
        rows.append({"project_id": project_id, "content_hash": digest, "stored_path": path,
                     "kind": "dicom" if is_dicom else "photo", "modality": modality, "width": width,
                     "height": height, "frame_count": 1, "patient_pseudonym": f"BENCH{index // 3:05d}",
                     "deid_status": "released", "deid_report": {}, "attributes": {}, "priority": 0,
                     "random_key": random_key(seed, digest)})
    bulk_insert_items(ctx.engine, rows)
    return counts


def model_bytes(name: str, seed: int = 0) -> tuple[bytes, list[str], dict[str, Any]]:
    """(ONNX bytes, labels, meta) of the benchmark's model, built or trained locally; ``seed`` gives
    densenet121 different weights (the demo model is trained, so its bytes do not change)."""
    if name == "densenet121":
        from inference import build_densenet121_shaped

        return build_densenet121_shaped(seed=seed), list(CHEXNET_LABELS), dict(IMAGENET)
    if name == "demo":
        from services.demo import SAMPLE_DATA
        from services.demo_model import LABELS, train

        return train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes, list(LABELS), {}
    raise click.BadParameter(f"unknown model {name!r}")


def ingest_rendition_ms(ctx: Any, spec: Any, project_id: int, sample: int = 12) -> dict[str, float]:
    """What ingest pays per item to keep the model rendition (``services.ingest`` decodes the stored
    bytes at model size, encodes and stores the rendition): median ms over a sample of the corpus, per kind.
    Written under a throw-away rendition name, so the timed runs still find no rendition."""
    import statistics

    from db.admin import project_files
    from inference.pipeline import DerivedRenditions, encode_rendition
    from inference.preprocess import model_rendition

    rows = project_files(ctx.engine, project_id, sample)
    cache = DerivedRenditions(ctx.store, "bench-ingest-rendition")
    times: dict[str, list[float]] = {}
    for kind, path, digest in rows:
        data = ctx.store.get(path)
        t0 = time.perf_counter()
        cache.put(digest, encode_rendition(model_rendition(data, spec)))
        times.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)
    return {kind: round(statistics.median(ms), 2) for kind, ms in times.items()}


def _raw_rate(session: Any, spec: Any, images: int, batch_size: int) -> float:
    """Images/s of ``session.run`` on ready-made batches (all of the session's outputs, as the pipeline)."""
    import numpy as np

    batch = np.random.default_rng(1).normal(size=spec.input.shape(batch_size)).astype(np.float32)
    feeds = {spec.input_name: batch}
    session.run(None, feeds)  # warm
    runs = max(1, -(-images // batch_size))
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, feeds)
    return runs * batch_size / (time.perf_counter() - t0)


def _sig(x: float, digits: int = 4) -> float:
    return float(f"{x:.{digits}g}")


def _breakdown(timings: dict[str, float]) -> dict[str, float]:
    keys = ("wall_s", "start_s", "wait_s", "load_s", "decode_s", "preprocess_s", "inference_s", "write_s",
            "write_wait_s", "cache_hits", "cache_writes", "failed")
    return {k: timings[k] for k in keys if k in timings}


def run(model: str = "densenet121", images: int = 240, batch_size: int = 8, workers: int | None = None,
        dicom_size: int = 2000, repeats: int = 3, data_dir: Path | None = None) -> dict[str, Any]:
    import statistics

    import inference
    from inference.pipeline import INFERENCE_THREADS, Pipeline, Source, default_workers
    from medlabel.benchmarks.installation import throwaway_installation
    from services.models import prelabel, register_model
    from services.projects import LabelSpec, ProjectSpec, create_project

    with throwaway_installation("medlabel-bench-prelabel-", parent=data_dir) as ctx:
        pid = create_project(ctx, ProjectSpec(name=PROJECT, task_type="multi_label",
                                              labels=(LabelSpec("finding", "1"), LabelSpec("none", "2"))))
        t0 = time.perf_counter()
        counts = build_corpus(ctx, pid, images, dicom_size)
        corpus_s = time.perf_counter() - t0
        onnx_bytes, labels, meta = model_bytes(model)
        # every version its own weights (its own bytes and hash), so every timed run loads its model
        versions = [register_model(ctx, onnx_bytes if k == 0 else model_bytes(model, seed=k)[0], name="bench",
                                   labels=labels, meta=meta) for k in range(repeats + 1)]
        spec = inference.spec_from_dict(versions[0].input_spec)
        threads = min(INFERENCE_THREADS, inference.available_cores())
        n_workers = default_workers() if workers is None else workers

        t0 = time.perf_counter()  # one-time start: the forkserver, the workers' imports, the session
        _, warmup_path = ctx.store.put(_Corpus(64, seed=1).dicom(0)[0], ".dcm")  # not an item
        list(Pipeline([Source(0, partial(ctx.store.get, warmup_path))], spec.input, workers=n_workers))
        # the raw runs' session lives in a cache of its own: had it gone into the default cache, which
        # prelabel uses, the cold run (version 1, the same bytes) would have found its model loaded
        session = inference.SessionCache().session(spec, model_bytes=onnx_bytes, intra_op_threads=threads)
        startup_s = time.perf_counter() - t0
        sessions = inference.default_cache()
        sessions.clear()  # cold means cold in any process: one that ran these weights before (tests) too

        rendition_ms = ingest_rendition_ms(ctx, spec.input, pid)
        load_before = os.getloadavg()[0]
        raws = [_raw_rate(session, spec, images, batch_size)]
        runs = []  # version 1 decodes (cold); the others read the renditions it kept (warm)
        loads = []  # model loads inside each timed run: 1 each, since every version has its own weights
        for version in versions:
            before = sessions.loads
            runs.append(prelabel(ctx, pid, f"bench:{version.version}", batch_size=batch_size,
                                 workers=workers))
            loads.append(sessions.loads - before)
            raws.append(_raw_rate(session, spec, images, batch_size))
        load_after = os.getloadavg()[0]
    rates = [r.predicted / r.timings["wall_s"] for r in runs]
    around = [(raws[i] + raws[i + 1]) / 2 for i in range(len(runs))]  # the raw runs just before and after
    cold, cold_rate, cold_raw = runs[0], rates[0], around[0]
    warm_rates = rates[1:]
    pipeline = statistics.median(warm_rates)
    raw = statistics.median(raws[1:])  # the raw runs around the warm runs
    median_run = runs[1 + sorted(range(len(warm_rates)), key=warm_rates.__getitem__)[len(warm_rates) // 2]]
    return {
        "model": model, "images": images, "pipeline_images_per_s": round(pipeline, 2),
        "raw_images_per_s": round(raw, 2), "ratio": _sig(pipeline / raw),
        "cold_pipeline_images_per_s": round(cold_rate, 2), "cold_raw_images_per_s": round(cold_raw, 2),
        "cold_ratio": _sig(cold_rate / cold_raw),
        "ratio_per_repeat": [_sig(rate / raw_around) for rate, raw_around in zip(warm_rates, around[1:], strict=True)],
        "pipeline_runs_images_per_s": [round(r, 2) for r in warm_rates],
        "raw_runs_images_per_s": [round(r, 2) for r in raws],
        "predicted": [r.predicted for r in runs], "model_loads_per_run": loads,
        "failed": sum(len(r.failed) for r in runs),
        "repeats": repeats, "batch_size": batch_size, "workers": n_workers, "inference_threads": threads,
        "cores": inference.available_cores(), "load_average": [round(load_before, 2), round(load_after, 2)],
        "corpus": {**counts, "dicom_size": dicom_size, "build_s": round(corpus_s, 2)},
        "startup_s": round(startup_s, 3), "ingest_rendition_ms_per_item": rendition_ms,
        "breakdown": {"cold": _breakdown(cold.timings), "warm": _breakdown(median_run.timings)},
    }


@click.command("prelabel")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
@click.option("--model", type=click.Choice(["densenet121", "demo"]), default="densenet121", show_default=True,
              help="densenet121: CheXNet-shaped, random weights, built locally; demo: the demo's model.")
@click.option("--images", default=240, show_default=True, type=click.IntRange(3, 100_000),
              help="Items in the corpus (2 in 3 DICOM, 1 in 3 PNG).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1, 256))
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Decoding processes (default: the cores the model leaves, at least 1).")
@click.option("--dicom-size", default=2000, show_default=True, type=click.IntRange(32, 8192),
              help="Side of the DICOM images in pixels.")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 20),
              help="Warm pipeline runs, each between two raw runs (medians reported).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the temporary data folder goes (default: the system temp folder).")
def command(as_json: bool, model: str, images: int, batch_size: int, workers: int | None, dicom_size: int,
            repeats: int, data_dir: Path | None) -> None:
    """Pre-labelling pipeline (stored DICOM/PNG items to predictions in the database) against raw
    session.run on ready-made tensors, in the same run; with where the time goes."""
    result = run(model, images, batch_size, workers, dicom_size, repeats, data_dir)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"{result['model']}: {result['images']} images, batch {batch_size}, {result['workers']} worker(s), "
               f"{result['inference_threads']} inference threads")
    click.echo(f"  raw session.run     {result['raw_images_per_s']:8.1f} images/s")
    click.echo(f"  pipeline (renditions kept) {result['pipeline_images_per_s']:8.1f} images/s  "
               f"ratio {result['ratio']:.3f}")
    click.echo(f"  pipeline (first pass, decoding) {result['cold_pipeline_images_per_s']:8.1f} images/s  "
               f"ratio {result['cold_ratio']:.3f}")
    for name, parts in result["breakdown"].items():
        click.echo(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in parts.items()))
