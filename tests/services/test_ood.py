"""Unusual-input warnings: calibrated on validation images, shown with the answer, stored with the request.

Real data: PneumoniaMNIST (28x28) and the 16 full-size Kermany films that ship in sample_data/.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference import ood as math
from inference.preprocess import preprocess_array
from inference.registry import spec_from_dict
from services import accounts
from services import second_opinion as so
from services.context import AppContext
from services.demo import SAMPLE_DATA
from services.demo_model import LABELS, train, train_fullsize
from services.models import ood, register_model
from tests.services.factories import PASSWORD, approve

NPZ = SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz"
FILMS = sorted((SAMPLE_DATA / "kermany-cxr-samples").glob("*/*.jpeg"))


@pytest.fixture(scope="module")
def mnist() -> dict[str, np.ndarray]:
    data = np.load(NPZ)
    return {k: data[k] for k in ("train_images", "val_images", "test_images")}


def _png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def test_the_threshold_keeps_the_documented_false_alarm_rate_on_unseen_in_distribution_images(
        mnist: dict[str, np.ndarray]) -> None:
    feats = {k: math.pooled_input(v[:, None].astype(np.float64) / 255.0) for k, v in mnist.items()}
    detector, observed = math.calibrate(math.fit(feats["train_images"]), feats["val_images"], 0.05)
    assert observed <= 0.05
    flagged = float((detector.distances(feats["test_images"]) > detector.threshold).mean())
    assert flagged <= 0.10  # the test split was used for nothing: 7.5 % measured, near the 5 % rate
    again = math.Detector.from_bytes(detector.to_bytes())
    np.testing.assert_allclose(again.distances(feats["test_images"][:5]), detector.distances(feats["test_images"][:5]))


def test_a_full_size_film_is_flagged_for_a_28x28_model_and_its_own_images_are_not(
        ctx: AppContext, mnist: dict[str, np.ndarray]) -> None:
    doc = accounts.add_user(ctx, "doc", PASSWORD, "clinician").id
    model = register_model(ctx, train(NPZ).onnx_bytes, name="pneumonia-logreg", labels=list(LABELS))
    ref = f"{model.name}:{model.version}"
    approve(ctx, ref)
    record = ood.fit_on_images(ctx, ref, mnist["train_images"], mnist["val_images"],
                               reference_name="PneumoniaMNIST training", native_side=(28, 28))
    assert record["observed_rate"] <= 0.05 and record["n_calibration"] == 524  # (its "embedding": the pixels)
    # unseen in-distribution images: flagged at about the documented rate
    spec = spec_from_dict(model.input_spec)
    test = mnist["test_images"]
    xs = [preprocess_array(a, spec.input) for a in test]
    checks = [ood.check(ctx, record, x, x.reshape(1, -1), (28, 28)) for x in xs]
    assert sum(c is not None and c["unusual"] for c in checks) / len(checks) <= 0.10
    usual = next(i for i, c in enumerate(checks) if c is not None and not c["unusual"])
    opinion = so.ask(ctx, doc, "mnist.png", _png(test[usual]), ref)
    assert opinion.ood is not None and not opinion.ood["unusual"] and opinion.ood_warning == ""
    # every full-size film: unlike anything the model was trained on, said beside the answer and stored
    for film in FILMS[::5]:
        opinion = so.ask(ctx, doc, film.name, film.read_bytes(), ref)
        assert opinion.ood is not None and opinion.ood["unusual"]
        assert opinion.ood_warning.startswith("Unusual input for this model") and "pixels" in opinion.ood_warning
        stored = so.get(ctx, opinion.id, actor=doc)
        assert stored.ood == opinion.ood and stored.as_record()["ood"]["unusual"] is True


def test_the_demo_model_for_full_size_films_suits_them(ctx: AppContext, mnist: dict[str, np.ndarray]) -> None:
    films = {p: int(p.parent.name == "PNEUMONIA") for p in FILMS}
    trained = train_fullsize(NPZ, films)
    assert trained.films == 16 and trained.films_auroc >= 0.85 and trained.test_auroc >= 0.9
    model = register_model(ctx, trained.onnx_bytes, name="pneumonia-fullsize", labels=list(LABELS),
                           meta=trained.meta)
    spec = spec_from_dict(model.input_spec)
    assert spec.input.crop == "center" and spec.embedding_tensor
    record = ood.fit_on_images(ctx, "pneumonia-fullsize", mnist["train_images"], mnist["val_images"],
                               reference_name="PneumoniaMNIST training")
    assert record["space"] == "embedding" and record["native_side"] is None
    import inference

    unusual = 0
    for film in FILMS:
        x = inference.preprocess(film.read_bytes(), spec.input, name=film.name)
        emb = inference.run(spec, x, model_bytes=trained.onnx_bytes, embeddings=True).embeddings
        result = ood.check(ctx, record, x, emb, (1000, 1200))
        assert result is not None
        unusual += result["unusual"]
    assert unusual <= 4, unusual  # centre-cropped, full-size films look like its training images


def test_a_centre_crop_keeps_the_middle_of_a_wide_image(tmp_path: Path) -> None:
    import inference
    from inference.types import InputSpec

    wide = np.zeros((40, 80), dtype=np.uint8)
    wide[:, 20:60] = 200  # the centre 40x40 square is bright, the sides dark
    data = _png(wide)
    cropped = inference.model_rendition(data, InputSpec(8, 8, crop="center"))
    stretched = inference.model_rendition(data, InputSpec(8, 8))
    assert cropped.min() >= 190 and stretched[:, 0].max() < 10
