"""Unusual-input warnings for second opinions: how unlike its training data an upload is.

A model version may carry an out-of-distribution detector (``ModelVersion.ood``), fitted on feature
vectors of its reference (training) images and calibrated on *separate* validation images to a
documented false-alarm rate (``inference/ood.py``: Mahalanobis distance under probabilistic PCA, split-
conformal threshold). Features: the model's embedding when it exposes one, else its preprocessed input
pooled to at most 32 x 32. The fitted statistics live in the content store; the row keeps the method,
threshold, rate, counts and the store path.

A second check, ``native_side``, applies to models whose reference images all came at one native
size (e.g. 28 x 28 PneumoniaMNIST arrays fed to a model that stretches whatever it gets to 28 x 28):
an upload whose shorter side is outside ``[min / 2, max * 2]`` of the reference images' shorter sides
is unlike anything the model was trained on, whatever its pixels look like after the resize. Reference
and validation images are inside that range by construction, so it adds no false alarms on them.

``check`` runs in ``second_opinion.ask`` on the features the answer was computed from and returns the
record stored with the request (``SecondOpinionRequest.ood``) and shown beside the answer.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

import numpy as np

import inference
from db.models import ModelVersion
from inference import ood as detector_math
from services.context import AppContext

NATIVE_TOLERANCE = 2.0  # an upload's shorter side may be this many times smaller or larger than the reference's
_CACHE_SIZE = 16
_cache: OrderedDict[str, detector_math.Detector] = OrderedDict()
_lock = threading.Lock()


def features(x: np.ndarray, embeddings: np.ndarray | None, space: str) -> np.ndarray:
    """The feature rows the detector of ``space`` ("embedding" or "input") reads."""
    if space == "embedding":
        if embeddings is None:
            raise ValueError("this detector reads the model's embedding, which the run did not return")
        return np.asarray(embeddings, dtype=np.float64).reshape(len(embeddings), -1)
    return detector_math.pooled_input(x)


def fit(ctx: AppContext, model_id: int, reference: np.ndarray, validation: np.ndarray, *, space: str,
        reference_name: str, native_side: tuple[int, int] | None = None,
        false_alarm_rate: float = detector_math.DEFAULT_FALSE_ALARM_RATE) -> dict[str, Any]:
    """Fit the detector on ``reference`` features, calibrate it on ``validation`` features, store it with
    the model version and return its record (what the model card shows)."""
    detector = detector_math.fit(reference)
    detector, observed = detector_math.calibrate(detector, validation, false_alarm_rate)
    _, path = ctx.store.put(detector.to_bytes())  # an .npz archive (the store knows no such suffix)
    record = {"method": detector_math.METHOD, "method_title": detector_math.METHOD_TITLE, "space": space,
              "path": path, "threshold": round(detector.threshold, 4), "false_alarm_rate": false_alarm_rate,
              "observed_rate": round(observed, 4), "n_reference": int(len(reference)),
              "n_calibration": int(len(validation)), "reference": reference_name,
              "native_side": None if native_side is None else [int(native_side[0]), int(native_side[1])]}
    with ctx.sessions.begin() as session:
        row = session.get(ModelVersion, model_id)
        assert row is not None
        row.ood = record
    return record


def _detector(ctx: AppContext, path: str) -> detector_math.Detector:
    with _lock:
        if path in _cache:
            _cache.move_to_end(path)
            return _cache[path]
    loaded = detector_math.Detector.from_bytes(ctx.store.get(path))
    with _lock:
        _cache[path] = loaded
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return loaded


def check(ctx: AppContext, record: dict[str, Any] | None, x: np.ndarray, embeddings: np.ndarray | None,
          native: tuple[int, int] | None) -> dict[str, Any] | None:
    """How unusual one input is for the model whose detector ``record`` is (None: no detector). ``native``:
    the upload's (height, width) before preprocessing. Returns the stored record with ``unusual`` and a
    ``warning`` line (empty when not unusual)."""
    if not record:
        return None
    distance = float(_detector(ctx, record["path"]).distances(features(x, embeddings, record["space"]))[0])
    threshold = float(record["threshold"])
    reasons = []
    if distance > threshold:
        reasons.append(f"its features are further from the {record['reference']} images than all but "
                       f"{record['false_alarm_rate']:.0%} of the model's validation images (distance {distance:.2f}, "
                       f"threshold {threshold:.2f})")
    side = record.get("native_side")
    if side and native is not None:
        shorter = min(native)
        if shorter < side[0] / NATIVE_TOLERANCE or shorter > side[1] * NATIVE_TOLERANCE:
            size = f"{side[0]} px" if side[0] == side[1] else f"{side[0]}-{side[1]} px"
            reasons.append(f"it is {native[1]}x{native[0]} pixels, while the model was trained on images whose "
                           f"shorter side is {size}")
    warning = ("Unusual input for this model: " + "; and ".join(reasons) + ". Its answer may not apply to "
               "this image.") if reasons else ""
    return {"unusual": bool(reasons), "distance": round(distance, 4), "threshold": threshold,
            "false_alarm_rate": record["false_alarm_rate"], "method": record["method"], "space": record["space"],
            "native": None if native is None else [int(native[0]), int(native[1])], "warning": warning}


def native_size(data: bytes, name: str) -> tuple[int, int] | None:
    """(height, width) of an upload as stored (EXIF orientation applied), or None if unknown."""
    try:
        meta = inference.read_image_meta(data, name)
    except Exception:  # noqa: BLE001 - the answer was computed already; a missing size only skips that check
        return None
    return (meta.height, meta.width) if meta.height and meta.width else None


def fit_on_images(ctx: AppContext, model_ref: str, reference: np.ndarray, validation: np.ndarray, *,
                  reference_name: str, native_side: tuple[int, int] | None = None,
                  false_alarm_rate: float = detector_math.DEFAULT_FALSE_ALARM_RATE) -> dict[str, Any]:
    """``fit`` from 8-bit images already at the model's input size (N x H x W, e.g. a data set's train and
    validation splits): preprocessed exactly as an upload, run through the model for its embedding when it
    has one, else pooled."""
    from inference.preprocess import preprocess_array
    from services.models.registry import resolve

    model = resolve(ctx, model_ref)
    spec = inference.spec_from_dict(model.input_spec)
    with ctx.reads() as session:
        row = session.get(ModelVersion, model.id)
        assert row is not None
        model_bytes = ctx.store.get(row.stored_path)
    space = "embedding" if spec.embedding_tensor else "input"

    def feats(images: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(images), 256):
            x = np.concatenate([preprocess_array(image, spec.input) for image in images[start:start + 256]])
            emb = inference.run(spec, x, model_bytes=model_bytes, embeddings=True).embeddings if space == "embedding" \
                else None
            out.append(features(x, emb, space))
        return np.concatenate(out)

    return fit(ctx, model.id, feats(reference), feats(validation), space=space, reference_name=reference_name,
               native_side=native_side, false_alarm_rate=false_alarm_rate)
