"""`medlabel bench variants`: size, latency and throughput of quantized variants against float32.

Method (figures in docs/benchmarks.md):

* Models: the DenseNet-121-shaped graph (``inference.build_densenet121_shaped``, seed 0, random
  weights, 224x224x3 in, 14 sigmoid outputs, ImageNet normalisation) and the demo model (logistic
  regression on PneumoniaMNIST, ``services.demo_model.train``, 28x28x1 in, softmax over 2 classes).
* Variants: ``inference.quantize.quantize_model`` in each mode (dynamic int8; static int8 QDQ,
  per-channel, U8S8, MinMax-calibrated; float16 with float32 inputs/outputs). Calibration: 64 images
  drawn with seed 0 (DenseNet: the NIH ChestX-ray14 sample's train images; demo: PneumoniaMNIST's
  train split), preprocessed with the model's input spec.
* Timing, per model, all variants interleaved in ``rounds`` rounds so that load changes hit each
  variant alike: single-image latency (batch 1, 1 intra-op thread: the interactive setting), the
  median over rounds x ``runs`` warm runs; throughput at batch 8 with ``threads`` intra-op threads
  (the batch setting; default: the cores available), the median over rounds of the best of
  ``runs // 2 + 1`` batches. Ratios against float32 come from the same run:
  ``latency_speedup = p50(fp32) / p50(variant)``, ``throughput_ratio = images_per_s(variant) /
  images_per_s(fp32)``, ``size_ratio = bytes(variant) / bytes(fp32)``.
* Agreement with float32 on 64 other images (NIH test / PneumoniaMNIST test, seed 1): the share of
  equal top-1 classes (single-label) or equal present/absent decisions at 0.5 (multi-label), and the
  largest absolute probability difference.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any

import click

from medlabel.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
NIH = ROOT / "sample_data" / "nih-chestxray14-1000"
PNEUMONIAMNIST = ROOT / "sample_data" / "pneumoniamnist" / "pneumoniamnist.npz"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
MODES = ("dynamic", "static-int8", "fp16")
CALIBRATION = 64


def _densenet() -> tuple[bytes, list[str], dict[str, Any], Any, Any]:
    import numpy as np

    import inference

    model = inference.build_densenet121_shaped(seed=0)
    labels = [f"finding_{i}" for i in range(14)]
    spec = inference.inspect_model(model, labels, IMAGENET)

    def images(split: str, seed: int) -> Any:
        files = sorted((NIH / split).glob("*/*.png"))
        if not files:
            raise InputError(NIH / split, "no PNG images (the NIH ChestX-ray14 sample is missing)")
        chosen = np.random.default_rng(seed).choice(len(files), size=min(CALIBRATION, len(files)), replace=False)
        return np.concatenate([inference.preprocess(files[i].read_bytes(), spec.input, name=str(files[i]))
                               for i in sorted(chosen)])

    return model, labels, IMAGENET, images("train", 0), images("test", 1)


def _demo() -> tuple[bytes, list[str], dict[str, Any], Any, Any]:
    import numpy as np

    import inference
    from services.demo_model import LABELS, train

    if not PNEUMONIAMNIST.is_file():
        raise InputError(PNEUMONIAMNIST, "no such file (the PneumoniaMNIST sample is missing)")
    model = train(PNEUMONIAMNIST).onnx_bytes
    spec = inference.inspect_model(model, list(LABELS))
    data = np.load(PNEUMONIAMNIST)

    def images(split: str, seed: int) -> Any:
        pool = data[f"{split}_images"]
        chosen = sorted(np.random.default_rng(seed).choice(len(pool), size=CALIBRATION, replace=False))
        return np.concatenate([inference.preprocess_array(pool[i], spec.input) for i in chosen])

    return model, list(LABELS), {}, images("train", 0), images("test", 1)


BUILDERS = {"densenet121": _densenet, "demo": _demo}


def _measure(name: str, rounds: int, runs: int, threads: int) -> dict[str, Any]:
    import numpy as np

    import inference
    from inference.quantize import VARIANTS, quantize_model

    model, labels, meta, calibration, held_out = BUILDERS[name]()
    spec = inference.inspect_model(model, labels, meta)
    variants: dict[str, tuple[bytes, Any, float]] = {"fp32": (model, spec, 0.0)}
    for mode in MODES:
        start = time.perf_counter()
        q = quantize_model(model, spec, mode, meta=meta, calibration=calibration)
        variants[mode] = (q.model_bytes, q.spec, time.perf_counter() - start)
    cache = inference.SessionCache(memory_budget=4 << 30)
    rng = np.random.default_rng(0)
    one = rng.standard_normal(spec.input.shape(1)).astype(np.float32)
    eight = rng.standard_normal(spec.input.shape(8)).astype(np.float32)
    single: dict[str, list[float]] = {k: [] for k in variants}
    batched: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    for key, (data, vspec, _) in variants.items():  # load, warm up, and the held-out predictions
        cache.run(vspec, one, model_bytes=data, intra_op_threads=1, embeddings=False)
        cache.run(vspec, eight, model_bytes=data, intra_op_threads=threads, embeddings=False)
        outputs[key] = cache.run(vspec, held_out, model_bytes=data, intra_op_threads=threads,
                                 embeddings=False).probabilities
    for _ in range(rounds):
        for key, (data, vspec, _) in variants.items():
            for _ in range(runs):
                start = time.perf_counter()
                cache.run(vspec, one, model_bytes=data, intra_op_threads=1, embeddings=False)
                single[key].append(time.perf_counter() - start)
            best = float("inf")
            for _ in range(runs // 2 + 1):
                start = time.perf_counter()
                cache.run(vspec, eight, model_bytes=data, intra_op_threads=threads, embeddings=False)
                best = min(best, time.perf_counter() - start)
            batched[key].append(8 / best)
    reference = outputs["fp32"]
    base_p50, base_per_s = float(np.median(single["fp32"])), float(np.median(batched["fp32"]))
    rows = {}
    for key, (data, vspec, seconds) in variants.items():
        p50, per_s = float(np.median(single[key])), float(np.median(batched[key]))
        out = outputs[key]
        if vspec.multi_label:
            agreement = float(((out >= 0.5) == (reference >= 0.5)).mean())
        else:
            agreement = float((out.argmax(1) == reference.argmax(1)).mean())
        rows[key] = {"variant": "fp32" if key == "fp32" else VARIANTS[key], "size_bytes": len(data),
                     "size_ratio": round(len(data) / len(model), 3),
                     "p50_ms": round(p50 * 1000, 4), "latency_speedup": round(base_p50 / p50, 3),
                     "images_per_s": round(per_s, 1), "throughput_ratio": round(per_s / base_per_s, 3),
                     "quantize_s": round(seconds, 2), "agreement_with_fp32": round(agreement, 4),
                     "max_abs_diff": round(float(np.abs(out - reference).max()), 5)}
    return {"model": name, "calibration_images": int(calibration.shape[0]), "held_out_images": int(held_out.shape[0]),
            "rounds": rounds, "runs": runs, "threads_batch": threads, "variants": rows}


@click.command("variants")
@click.option("--model", "models", type=click.Choice(["densenet121", "demo", "all"]), default="all",
              show_default=True, help="Which model's variants to measure.")
@click.option("--rounds", default=5, show_default=True, type=click.IntRange(1), help="Interleaved rounds.")
@click.option("--runs", default=5, show_default=True, type=click.IntRange(1), help="Timed runs per round.")
@click.option("--threads", default=None, type=click.IntRange(1),
              help="Intra-op threads of the batch-8 runs [default: the cores available].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(models: str, rounds: int, runs: int, threads: int | None, as_json: bool) -> None:
    """Size, p50 latency and batch-8 throughput of each quantized variant against float32."""
    import onnxruntime

    import inference

    threads = threads or inference.available_cores()
    names = ["densenet121", "demo"] if models == "all" else [models]
    result = {"models": [_measure(n, rounds, runs, threads) for n in names],
              "machine": {"cores": inference.available_cores(), "onnxruntime": onnxruntime.__version__,
                          "processor": platform.processor() or platform.machine()}}
    if as_json:
        click.echo(json.dumps(result))
        return
    for m in result["models"]:
        click.echo(f"{m['model']}:")
        for key, row in m["variants"].items():
            click.echo(f"  {key:<12} {row['size_bytes']:>10} B ({row['size_ratio']:.2f}x)  p50 {row['p50_ms']:8.3f} ms "
                       f"({row['latency_speedup']:.2f}x)  {row['images_per_s']:7.1f} img/s "
                       f"({row['throughput_ratio']:.2f}x)  agreement {row['agreement_with_fp32']:.3f}")
