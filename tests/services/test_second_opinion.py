"""Second opinions: de-identified before storage, run on the shared sessions, recorded and audited,
similar cases by cosine similarity, and expert review at the front of a project's queue."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image, ImageDraw, PngImagePlugin
from sqlalchemy import func, select

import inference
from db.models import Annotation, AnnotationKind, AuditEvent, Item, Prediction, SecondOpinionRequest
from medlabel.benchmarks.deid_corpus import plant, real
from medlabel.errors import ConflictError, InputError, NotFoundError, PermissionDenied
from services import accounts, labelling, second_opinion
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.models import register_model
from services.second_opinion import common as so_common
from services.second_opinion import image as so_image
from tests.services.factories import PASSWORD, approve, make_items, make_project, user_id

LABELS = ["normal", "effusion", "nodule", "pneumonia"]


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return inference.build_tiny_cnn(input_hw=(32, 32), channels=1, n_classes=len(LABELS), seed=3, filters=8)


@pytest.fixture
def model(ctx: AppContext, model_bytes: bytes) -> str:
    registered = register_model(ctx, model_bytes, name="cxr-tiny", labels=LABELS)
    approve(ctx, f"{registered.name}:{registered.version}")
    return f"{registered.name}:{registered.version}"


@pytest.fixture
def doc(ctx: AppContext) -> int:
    return accounts.add_user(ctx, "doc", PASSWORD, "clinician").id


def _xray_png(seed: int = 0, size: int = 96) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(20, 60, (size, size), dtype=np.uint8), "L")
    ImageDraw.Draw(img).ellipse((15 + seed % 20, 20, 55 + seed % 20, 80), fill=200)
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def _direct_run(model_bytes: bytes, stored: bytes) -> np.ndarray:
    """The model run by hand on a fresh onnxruntime session, on the stored (de-identified) bytes."""
    spec = inference.inspect_model(model_bytes, LABELS)
    x = inference.preprocess(stored, spec.input)
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run([spec.output_name], {spec.input_name: x})[0][0]


def _store_files(ctx: AppContext) -> set[str]:
    root = Path(ctx.settings.store_dir)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def test_dicom_upload_is_deidentified_and_the_request_recorded(ctx: AppContext, model: str, model_bytes: bytes,
                                                               doc: int) -> None:
    planted = plant(real("MR_small.dcm"), "SO")
    opinion = second_opinion.ask(ctx, doc, "Quixote_Dulcinea_MRN-7781.dcm", planted.data, model)
    assert opinion.image_state in ("pending", "stored")
    stored_opinion = second_opinion.wait_for_image(ctx, opinion.id, actor=doc)
    assert stored_opinion.image_state == "stored" and stored_opinion.top == opinion.top

    with ctx.reads() as session:
        request = session.get(SecondOpinionRequest, opinion.id)
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "second_opinion.ask")).all()
        (image_event,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "second_opinion.image")).all()
    stored = ctx.store.get(request.stored_path)
    leaked = [value for value in planted.values if value.encode() in stored]
    assert not leaked and stored[128:132] == b"DICM"
    assert request.source_kind == "dicom" and request.deid_report["method"].startswith("medlabel deid")
    assert (request.user_id, request.model_name, request.model_version) == (doc, "cxr-tiny", 1)
    assert request.content_hash == stored_opinion.content_hash and request.image_state == "stored"
    assert image_event.payload["sha256"] == request.content_hash and image_event.payload["image"] == "stored"

    # top 3, highest first, equal to a direct session run on the upload's pixels, which are also the
    # stored pixels here (an MR: no burned-in text to mask)
    expected = _direct_run(model_bytes, planted.data)
    np.testing.assert_allclose(_direct_run(model_bytes, stored), expected, atol=1e-6)
    assert [s.label for s in opinion.top] == [LABELS[i] for i in np.argsort(-expected, kind="stable")[:3]]
    assert [s.probability for s in opinion.top] == sorted((s.probability for s in opinion.top), reverse=True)
    for label, p in zip(LABELS, expected, strict=True):
        assert opinion.prediction[label] == pytest.approx(float(p), abs=1e-5)
    assert sum(opinion.prediction.values()) == pytest.approx(1.0, abs=1e-4)

    record = opinion.as_record()
    assert set(record) == {"user", "model", "version", "prediction", "top", "time", "ood"}
    assert record["ood"] is None  # this model has no unusual-input check fitted
    assert (record["user"], record["model"], record["version"]) == ("doc", "cxr-tiny", 1)
    assert record["top"] == [{"label": s.label, "probability": s.probability} for s in opinion.top]
    assert record["top"] == request.top

    (event,) = events
    assert event.actor_id == doc and event.target_id == str(opinion.id)
    assert event.payload["model"] == "cxr-tiny" and event.payload["version"] == 1
    # the original file name (a patient's name here) is never stored
    assert "Quixote" not in repr(request.deid_report) + repr(event.payload)


def test_photo_metadata_and_gps_are_gone_before_storage(ctx: AppContext, model: str, doc: int) -> None:
    img = Image.open(io.BytesIO(_xray_png(1))).convert("RGB")
    exif = img.getexif()
    exif[0x010F] = "SecretCameraMaker"
    exif[0x8825] = {1: "N", 2: (40.0, 25.0, 1.0), 3: "W", 4: (3.0, 42.0, 2.0)}
    jpeg = io.BytesIO()
    img.save(jpeg, format="JPEG", exif=exif.tobytes(), quality=95)
    assert b"GPS" in jpeg.getvalue() or b"SecretCameraMaker" in jpeg.getvalue()
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", "Dulcinea Quixote")
    png = io.BytesIO()
    Image.open(io.BytesIO(_xray_png(2))).save(png, format="PNG", pnginfo=info)

    for name, data in (("phone.jpg", jpeg.getvalue()), ("screen.png", png.getvalue())):
        opinion = second_opinion.wait_for_image(ctx, second_opinion.ask(ctx, doc, name, data, model).id, actor=LOCAL_ADMIN)
        with ctx.reads() as session:
            request = session.get(SecondOpinionRequest, opinion.id)
        stored = ctx.store.get(request.stored_path)
        assert request.source_kind == "photo" and stored.startswith(b"\x89PNG")
        out = Image.open(io.BytesIO(stored))
        assert not out.getexif() and not getattr(out, "text", {})
        for secret in (b"GPS", b"SecretCameraMaker", b"Dulcinea", b"Exif"):
            assert secret not in stored
        assert len(opinion.top) == 3


def test_history_shows_only_the_callers_requests(ctx: AppContext, model: str, doc: int) -> None:
    other = accounts.add_user(ctx, "doc2", PASSWORD, "clinician").id
    mine = [second_opinion.ask(ctx, doc, f"a{i}.png", _xray_png(i), model).id for i in range(2)]
    theirs = second_opinion.ask(ctx, other, "b.png", _xray_png(9), model).id
    assert [o.id for o in second_opinion.history(ctx, doc)] == mine[::-1]
    assert [o.id for o in second_opinion.history(ctx, other)] == [theirs]
    assert all(o.user == "doc" for o in second_opinion.history(ctx, doc))
    with pytest.raises(PermissionDenied):
        second_opinion.get(ctx, theirs, actor=doc)
    with pytest.raises(PermissionDenied):
        second_opinion.heatmap(ctx, theirs, actor=doc)
    admin = accounts.add_user(ctx, "boss", PASSWORD, "admin").id
    assert second_opinion.get(ctx, theirs, actor=admin).user == "doc2"


@pytest.mark.parametrize("role", ["reader", "lead"])
def test_only_clinicians_and_admins_may_ask(ctx: AppContext, model: str, role: str) -> None:
    uid = accounts.add_user(ctx, "someone", PASSWORD, role).id
    before = _store_files(ctx)
    with pytest.raises(PermissionDenied, match="clinicians"):
        second_opinion.ask(ctx, uid, "x.png", _xray_png(), model)
    assert _store_files(ctx) == before
    admin = accounts.add_user(ctx, "boss", PASSWORD, "admin").id
    assert second_opinion.ask(ctx, admin, "x.png", _xray_png(), model).user == "boss"


@pytest.mark.parametrize(("name", "data", "reason"), [
    ("broken.png", _xray_png()[:60], "readable image"),
    ("broken.dcm", plant(real("MR_small.dcm"), "BR").data[:-1000], "past the end of the file"),  # a truncated file: its Pixel Data runs past the end
    ("header-only.dcm", plant(real("MR_small.dcm"), "BR").data[:400], "pixel data"),
    ("notes.txt", b"patient notes, not an image", "not a DICOM, PNG or JPEG file"),
    ("empty.jpg", b"", "empty file"),
])
def test_a_corrupt_upload_is_named_and_nothing_is_stored(ctx: AppContext, model: str, doc: int, name: str,
                                                         data: bytes, reason: str) -> None:
    before = _store_files(ctx)
    with pytest.raises(InputError, match=reason) as raised:
        second_opinion.ask(ctx, doc, f"/uploads/{name}", data, model)
    assert name in str(raised.value)
    assert _store_files(ctx) == before
    with ctx.reads() as session:
        assert session.scalar(select(func.count()).select_from(SecondOpinionRequest)) == 0
        assert session.scalar(select(func.count()).where(AuditEvent.action == "second_opinion.ask")) == 0


def test_unknown_and_removed_models_are_refused(ctx: AppContext, model: str, doc: int) -> None:
    from services.models import deactivate

    with pytest.raises(NotFoundError):
        second_opinion.ask(ctx, doc, "x.png", _xray_png(), "no-such-model")
    deactivate(ctx, model)
    with pytest.raises(NotFoundError, match="removed"):
        second_opinion.ask(ctx, doc, "x.png", _xray_png(), model)


def _read(ctx: AppContext, item_id: int, reader: str, labels: list[str], kind: AnnotationKind = AnnotationKind.LABEL,
          ) -> None:
    with ctx.sessions.begin() as session:
        session.add(Annotation(item_id=item_id, user_id=user_id(ctx, reader), kind=kind, labels=labels))


def _unit_orthogonal(q: np.ndarray, seed: int) -> np.ndarray:
    u = np.random.default_rng(seed).normal(size=q.shape)
    u -= (u @ q) / (q @ q) * q
    return u / np.linalg.norm(u)


def test_neighbours_are_ranked_by_cosine_similarity_with_final_labels(ctx: AppContext, model: str,
                                                                      doc: int) -> None:
    pid = make_project(ctx, second_opinion=True, readers=("rad1", "rad2", "lead1"))
    items = make_items(ctx, pid, 6, width=32, height=32)
    opinion = second_opinion.ask(ctx, doc, "q.png", _xray_png(4), model)
    assert second_opinion.neighbours(ctx, opinion.id, actor=LOCAL_ADMIN).cases == ()
    assert "No labelled cases" in second_opinion.neighbours(ctx, opinion.id, actor=LOCAL_ADMIN).note

    with ctx.reads() as session:
        request = session.get(SecondOpinionRequest, opinion.id)
    raw = ctx.store.get_derived(request.content_hash, f"second-opinion/embedding/{_sha(ctx, model)}")
    q = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    assert q.shape == (8,) and np.linalg.norm(q) > 0
    u = _unit_orthogonal(q, 0)
    qn = q / np.linalg.norm(q)
    angles = {items[0]: 0.05, items[1]: 0.1, items[2]: 0.6, items[3]: 0.0, items[4]: 0.3, items[5]: 2.5}
    with ctx.sessions.begin() as session:
        for item, angle in angles.items():
            e = (np.cos(angle) * qn + np.sin(angle) * u) * (1 + item % 3)  # the length must not matter
            session.add(Prediction(item_id=item, model_id=request.model_id, probabilities={},
                                   embedding=e.astype("<f4").tobytes()))
    _read(ctx, items[0], "rad1", ["normal"])                  # single read: the most similar labelled case
    _read(ctx, items[1], "rad1", ["pneumonia"])
    _read(ctx, items[1], "rad2", ["pneumonia"])                               # consensus
    _read(ctx, items[2], "rad1", ["normal"])
    _read(ctx, items[2], "rad2", ["pneumonia"])
    _read(ctx, items[2], "lead1", ["pneumonia"], AnnotationKind.ADJUDICATION)  # adjudicated
    # items[3] is the most similar but unlabelled; items[4] is disputed: neither is a labelled case
    _read(ctx, items[4], "rad1", ["normal"])
    _read(ctx, items[4], "rad2", ["pneumonia"])
    _read(ctx, items[5], "rad1", ["normal"])

    result = second_opinion.neighbours(ctx, opinion.id, k=3, actor=LOCAL_ADMIN)
    # verified cases first (by similarity), then the single read, although it is the most similar
    assert [c.item_id for c in result.cases] == [items[1], items[2], items[0]]
    assert [c.similarity for c in result.cases] == pytest.approx([np.cos(0.1), np.cos(0.6), np.cos(0.05)], abs=1e-4)
    assert [(c.labels, c.provenance) for c in result.cases] == [
        (("pneumonia",), "consensus"), (("pneumonia",), "adjudicated"), (("normal",), "single read")]
    assert [c.provenance_text for c in result.cases] == ["consensus of 2 reads", "adjudicated",
                                                         "single read, not verified"]
    assert [c.verified for c in result.cases] == [True, True, False]
    assert "1 of these 3 carry a single reader's label" in result.note
    assert all(c.thumbnail.startswith(b"\x89PNG") and c.project == "Chest" for c in result.cases)
    everything = second_opinion.neighbours(ctx, opinion.id, k=10, actor=LOCAL_ADMIN)
    assert [c.item_id for c in everything.cases] == [items[1], items[2], items[0], items[5]]
    assert "Only 4" in everything.note


def _sha(ctx: AppContext, ref: str) -> str:
    from services.models import resolve

    return resolve(ctx, ref).sha256


def test_cosine_ranking_reference() -> None:
    order, sims = inference.cosine_ranking(np.array([1.0, 0.0]),
                                                np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0], [0.0, 0.0]]))
    assert list(order) == [1, 2, 0, 3]
    assert sims == pytest.approx([0.0, 1.0, np.sqrt(0.5), 0.0])


def test_request_review_puts_the_image_first_in_the_queue_once(ctx: AppContext, model: str, doc: int) -> None:
    pid = make_project(ctx, second_opinion=True)
    other_project = make_project(ctx, "Other", second_opinion=True)
    make_items(ctx, pid, 5)
    opinion = second_opinion.ask(ctx, doc, "urgent.png", _xray_png(7), model)
    review = second_opinion.request_review(ctx, opinion.id, pid, doc)
    assert review.created and review.status == "released" and review.project == "Chest"
    again = second_opinion.request_review(ctx, opinion.id, pid, doc)
    assert again == second_opinion.ReviewDTO(review.item_id, "Chest", False, "released")
    with pytest.raises(ConflictError, match="Chest"):
        second_opinion.request_review(ctx, opinion.id, other_project, doc)
    other = accounts.add_user(ctx, "doc2", PASSWORD, "clinician").id
    with pytest.raises(PermissionDenied):
        second_opinion.request_review(ctx, opinion.id, pid, other)

    with ctx.reads() as session:
        request = session.get(SecondOpinionRequest, opinion.id)
        item = session.get(Item, review.item_id)
        in_project = session.scalar(select(func.count()).where(Item.project_id == pid))
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "second_opinion.review")).all()
    assert request.review_item_id == item.id and in_project == 6
    assert (item.content_hash, item.stored_path) == (request.content_hash, request.stored_path)
    assert item.kind == "photo" and item.width == 96 and "result" not in item.deid_report
    assert len(events) == 1 and events[0].actor_id == doc and events[0].payload["item_id"] == item.id
    case = labelling.next_case(ctx, pid, user_id(ctx, "rad1"))
    assert case is not None and case.item_id == review.item_id
    assert second_opinion.history(ctx, doc)[0].review_project == "Chest"


def test_heat_map_is_a_cached_overlay_of_the_deidentified_image(ctx: AppContext, model: str, doc: int) -> None:
    opinion = second_opinion.ask(ctx, doc, "x.png", _xray_png(5), model)
    png = second_opinion.heatmap(ctx, opinion.id, actor=doc)
    shown = Image.open(io.BytesIO(png))
    assert shown.size == (96, 96) and shown.mode == "RGB"
    display = Image.open(io.BytesIO(second_opinion.display_png(ctx, opinion.id, actor=LOCAL_ADMIN)))
    assert display.size == (96, 96)
    assert second_opinion.heatmap(ctx, opinion.id, actor=LOCAL_ADMIN) == png  # cached
    other = second_opinion.heatmap(ctx, opinion.id, LABELS[-1], actor=LOCAL_ADMIN)
    assert other.startswith(b"\x89PNG")
    with pytest.raises(InputError, match="no label"):
        second_opinion.heatmap(ctx, opinion.id, "fracture", actor=LOCAL_ADMIN)


def _flat_model(side: int = 16, classes: int = 2) -> bytes:
    """Flatten-Gemm-Softmax: its embedding (the Gemm input) is the preprocessed image itself."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(0).normal(size=(side * side, classes)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["image"], ["features"], axis=1),
         helper.make_node("Gemm", ["features", "W", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)], "flat",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, side, side])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(np.zeros(classes, np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _pattern(kind: int, size: int = 96) -> bytes:
    y, x = np.mgrid[0:size, 0:size]
    if kind == 0:
        arr = x * 255.0 / size
    elif kind == 1:
        arr = ((x // 12 + y // 12) % 2) * 255.0
    elif kind == 2:
        arr = np.full((size, size), 20.0)
        arr[30:70, 30:70] = 230
    else:
        arr = np.full((size, size), 230.0)
        arr[::16, :] = 0
    buffer = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def test_neighbours_use_the_embeddings_prelabelling_stored(ctx: AppContext, doc: int) -> None:
    from services.ingest import ingest_uploads
    from services.models import prelabel

    flat = register_model(ctx, _flat_model(), name="flat", labels=["normal", "abnormal"])
    model = f"{flat.name}:{flat.version}"
    approve(ctx, model)
    pid = make_project(ctx, second_opinion=True)
    uploads = [_pattern(kind) for kind in range(4)]
    report = ingest_uploads(ctx, pid, [(f"u{i}.png", data) for i, data in enumerate(uploads)], actor=LOCAL_ADMIN)
    items = [o.item_id for o in report.outcomes]
    assert report.count("released") == 4
    assert prelabel(ctx, pid, model, workers=0).predicted == 4
    for item in items:
        _read(ctx, item, "rad1", ["normal"])
    with ctx.reads() as session:
        stored = {p.item_id: np.frombuffer(p.embedding, dtype="<f4").astype(np.float64)
                  for p in session.scalars(select(Prediction).where(Prediction.item_id.in_(items)))}
        same = session.get(Item, items[2])

    # the third upload again: de-identification gives the very bytes intake stored, and the
    # second-opinion run gives the embedding prelabelling stored for that item
    opinion = second_opinion.wait_for_image(ctx, second_opinion.ask(ctx, doc, "again.png", uploads[2], model).id, actor=LOCAL_ADMIN)
    assert opinion.content_hash == same.content_hash
    query = np.frombuffer(ctx.store.get_derived(opinion.content_hash, f"second-opinion/embedding/{flat.sha256}"),
                          dtype="<f4").astype(np.float64)
    np.testing.assert_allclose(query, stored[items[2]], rtol=1e-5, atol=1e-6)

    cases = second_opinion.neighbours(ctx, opinion.id, k=5, actor=LOCAL_ADMIN).cases  # the image itself is not its own neighbour
    others = [i for i in items if i != items[2]]
    cosine = {i: float(stored[i] @ query / np.linalg.norm(stored[i]) / np.linalg.norm(query)) for i in others}
    assert len({round(c, 3) for c in cosine.values()}) == 3  # clearly different similarities
    assert [c.item_id for c in cases] == sorted(others, key=lambda i: -cosine[i])
    assert [c.similarity for c in cases] == pytest.approx([cosine[c.item_id] for c in cases], abs=1e-4)


def test_a_session_evicted_meanwhile_is_loaded_again_from_the_store(ctx: AppContext, model: str, doc: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cache = inference.default_cache()
    first = second_opinion.ask(ctx, doc, "a.png", _xray_png(1), model)
    sha = _sha(ctx, model)
    cache.clear()  # evicted after the check below said it was loaded
    monkeypatch.setattr(cache, "loaded", lambda: [(sha, cache.intra_op_threads)])
    again = second_opinion.ask(ctx, doc, "a.png", _xray_png(1), model)
    assert again.prediction == first.prediction
    assert sha in {key for key, _ in type(cache).loaded(cache)}  # the real list: loaded again


# --- the answer first, the image after --------------------------------------------------------------


def test_the_answer_comes_first_and_nothing_is_stored_before_deidentification(
        ctx: AppContext, model: str, model_bytes: bytes, doc: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import deid

    release, real_deid = threading.Event(), deid.deidentify_bytes

    def held(*args: Any, **kwargs: Any) -> deid.DeidResult:
        assert release.wait(30), "the test never released de-identification"
        return real_deid(*args, **kwargs)

    monkeypatch.setattr(deid, "deidentify_bytes", held)
    before = _store_files(ctx)
    upload = _xray_png(3)
    opinion = second_opinion.ask(ctx, doc, "Dulcinea.png", upload, model)

    # the model has answered from the upload's pixels (in memory) and the request is recorded ...
    expected = _direct_run(model_bytes, upload)
    assert [s.label for s in opinion.top] == [LABELS[i] for i in np.argsort(-expected, kind="stable")[:3]]
    assert opinion.image_state == "pending" and opinion.content_hash is None
    # ... while no byte of the upload is stored, and whatever needs the image waits or says why not
    assert second_opinion.wait_for_image(ctx, opinion.id, timeout=0.05, actor=LOCAL_ADMIN).image_state == "pending"
    assert _store_files(ctx) == before
    with ctx.reads() as session:
        request = session.get(SecondOpinionRequest, opinion.id)
        assert (request.content_hash, request.stored_path, request.image_state) == (None, None, "pending")
    assert "Dulcinea" not in repr(request.deid_report)

    release.set()
    done = second_opinion.wait_for_image(ctx, opinion.id, actor=doc)
    assert done.image_state == "stored" and done.deid_status == "released" and done.content_hash
    assert _store_files(ctx) != before
    assert second_opinion.display_png(ctx, opinion.id, actor=LOCAL_ADMIN).startswith(b"\x89PNG")
    assert second_opinion.history(ctx, doc)[0].image_state == "stored"


def test_a_full_background_backlog_makes_a_request_wait_then_refuses_it(
        ctx: AppContext, model: str, doc: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    import deid
    from medlabel.errors import Busy

    release, real_deid = threading.Event(), deid.deidentify_bytes

    def held(*args: Any, **kwargs: Any) -> deid.DeidResult:
        assert release.wait(30), "the test never released de-identification"
        return real_deid(*args, **kwargs)

    monkeypatch.setattr(deid, "deidentify_bytes", held)
    from services.second_opinion import image

    monkeypatch.setattr(image, "_backlog", threading.BoundedSemaphore(2))
    monkeypatch.setattr(image, "BACKLOG_WAIT_S", 0.2)
    first = second_opinion.ask(ctx, doc, "a.png", _xray_png(1), model)
    for _ in range(3):
        with pytest.raises(InputError):
            second_opinion.ask(ctx, doc, "d.png", b"not an image", model)  # refused: its slot comes back at once
    second_opinion.ask(ctx, doc, "b.png", _xray_png(2), model)
    with pytest.raises(Busy, match="waiting for de-identification"):
        second_opinion.ask(ctx, doc, "c.png", _xray_png(3), model)  # both slots held: refused after the wait
    assert len(second_opinion.history(ctx, doc)) == 2
    release.set()
    assert second_opinion.wait_for_image(ctx, first.id, actor=doc).image_state == "stored"
    second_opinion.drain(ctx)
    third = second_opinion.ask(ctx, doc, "c.png", _xray_png(3), model)  # the slots are free again
    assert second_opinion.wait_for_image(ctx, third.id, actor=doc).image_state == "stored"


def test_the_background_step_runs_at_a_lower_cpu_priority(ctx: AppContext, model: str, doc: int,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys

    import deid
    from services.second_opinion import image

    if sys.platform != "linux":
        pytest.skip("per-thread priorities are Linux's")
    seen, real_deid = [], deid.deidentify_bytes

    def observed(*args: Any, **kwargs: Any) -> deid.DeidResult:
        import threading

        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return real_deid(*args, **kwargs)

    monkeypatch.setattr(deid, "deidentify_bytes", observed)
    opinion = second_opinion.ask(ctx, doc, "a.png", _xray_png(1), model)
    assert second_opinion.wait_for_image(ctx, opinion.id, actor=doc).image_state == "stored"
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen == [min(19, mine + image.BACKGROUND_NICENESS)]
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine  # the answering thread keeps its priority


def test_an_upload_deidentification_refuses_keeps_its_answer_but_never_its_image(
        ctx: AppContext, model: str, doc: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    import deid

    real_deid = deid.deidentify_bytes

    def refusing(*args: Any, **kwargs: Any) -> deid.DeidResult:
        result = real_deid(*args, **kwargs)
        return dataclasses.replace(result, status="refused", output=None,
                                   reason="withheld: 1 original identifying value(s) still present")

    monkeypatch.setattr(deid, "deidentify_bytes", refusing)
    pid = make_project(ctx, second_opinion=True, readers=("rad1",))
    before = _store_files(ctx)
    opinion = second_opinion.wait_for_image(ctx, second_opinion.ask(ctx, doc, "x.png", _xray_png(6), model).id, actor=LOCAL_ADMIN)
    assert opinion.image_state == "refused" and "withheld" in opinion.deid_reason
    assert len(opinion.top) == 3  # the answer stays on record
    assert _store_files(ctx) == before
    for call in (lambda: second_opinion.heatmap(ctx, opinion.id, actor=LOCAL_ADMIN), lambda: second_opinion.neighbours(ctx, opinion.id, actor=LOCAL_ADMIN),
                 lambda: second_opinion.display_png(ctx, opinion.id, actor=LOCAL_ADMIN)):
        with pytest.raises(NotFoundError, match="not kept: de-identification refused it"):
            call()
    with pytest.raises(NotFoundError, match="not kept"):
        second_opinion.request_review(ctx, opinion.id, pid, doc)
    with ctx.reads() as session:
        assert session.scalar(select(func.count()).where(Item.project_id == pid)) == 0
        (event,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "second_opinion.image")).all()
    assert event.payload["image"] == "refused" and event.payload["sha256"] is None


def test_a_pending_image_no_process_works_on_is_given_up(ctx: AppContext, model: str, doc: int) -> None:
    import datetime as dt

    opinion = second_opinion.wait_for_image(ctx, second_opinion.ask(ctx, doc, "x.png", _xray_png(8), model).id, actor=LOCAL_ADMIN)
    with ctx.sessions.begin() as session:
        model_id = session.get(SecondOpinionRequest, opinion.id).model_id
        now = dt.datetime.now(dt.UTC)
        rows = [SecondOpinionRequest(user_id=doc, model_id=model_id, content_hash=None, image_state="pending",
                                     prediction={}, top=[], deid_report={"status": "pending"}, created_at=when)
                for when in (now - dt.timedelta(hours=1), now)]  # a stopped process's, and one just asked elsewhere
        session.add_all(rows)
        session.flush()
        old, recent = (r.id for r in rows)
    lost = second_opinion.wait_for_image(ctx, old, timeout=0.01, actor=LOCAL_ADMIN)
    assert lost.image_state == "lost" and "stopped" in lost.deid_reason
    with pytest.raises(NotFoundError, match="not kept"):
        second_opinion.heatmap(ctx, old, actor=LOCAL_ADMIN)
    assert second_opinion.wait_for_image(ctx, recent, timeout=0.01, actor=LOCAL_ADMIN).image_state == "pending"
    with pytest.raises(ConflictError, match="still being de-identified"):
        second_opinion.heatmap(ctx, recent, actor=LOCAL_ADMIN)


def test_masked_text_keeps_both_answers_and_similar_cases_use_the_stored_image(
        ctx: AppContext, model: str, model_bytes: bytes, doc: int) -> None:
    from medlabel.benchmarks.deid_corpus import text_image

    buffer = io.BytesIO()
    Image.fromarray(text_image(8), "L").save(buffer, format="PNG")
    upload = buffer.getvalue()
    opinion = second_opinion.wait_for_image(ctx, second_opinion.ask(ctx, doc, "burned.png", upload, model).id, actor=LOCAL_ADMIN)
    assert opinion.image_state == "stored"
    with ctx.reads() as session:
        request = session.get(SecondOpinionRequest, opinion.id)
    assert request.deid_report["text_boxes"], "the detector found no text"
    stored = ctx.store.get(request.stored_path)
    assert stored != upload
    on_upload, on_stored = _direct_run(model_bytes, upload), _direct_run(model_bytes, stored)
    # the answer shown is for the upload's pixels; the one for the stored (masked) image is kept too
    for label, p_upload, p_stored in zip(LABELS, on_upload, on_stored, strict=True):
        assert opinion.prediction[label] == pytest.approx(float(p_upload), abs=1e-5)
        assert opinion.masked_prediction[label] == pytest.approx(float(p_stored), abs=1e-5)
    # similar cases are searched with the stored image's embedding (what a re-run of the record gives)
    cached = np.frombuffer(ctx.store.get_derived(request.content_hash, f"second-opinion/embedding/{_sha(ctx, model)}"),
                           dtype="<f4")
    _, loaded, _ = so_image._stored(ctx, opinion.id, None)
    rerun = so_common._run(ctx, loaded, inference.preprocess(stored, loaded.spec.input)).embeddings
    on_upload_embedding = so_common._run(ctx, loaded, inference.preprocess(upload, loaded.spec.input)).embeddings
    np.testing.assert_allclose(cached, rerun[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(cached, on_upload_embedding[0])


def test_a_failing_image_step_is_logged_and_the_request_stays_readable(
        ctx: AppContext, model: str, doc: int, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("database went away")

    monkeypatch.setattr(so_image, "_image_done", broken)
    opinion = second_opinion.ask(ctx, doc, "x.png", _xray_png(2), model)
    assert second_opinion.wait_for_image(ctx, opinion.id, actor=LOCAL_ADMIN).image_state == "pending"  # no exception raised here
    assert "image step failed" in caplog.text


def test_a_step_that_fails_before_anyone_waits_is_logged(
        ctx: AppContext, model: str, doc: int, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The step's future is forgotten once it ends: a failure must be logged by the step itself, not by
    whoever waits (a page may never wait, or look after the future has gone)."""
    def broken(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("database went away")

    monkeypatch.setattr(so_image, "_image_done", broken)
    opinion = second_opinion.ask(ctx, doc, "x.png", _xray_png(3), model)
    key, deadline = so_image._future_key(ctx, opinion.id), time.monotonic() + 30
    while key in so_image._futures and time.monotonic() < deadline:
        time.sleep(0.02)
    assert key not in so_image._futures, "the image step did not end within 30 s"
    assert second_opinion.wait_for_image(ctx, opinion.id, actor=LOCAL_ADMIN).image_state == "pending"
    assert caplog.text.count("image step failed") == 1


def test_an_unexpected_deidentification_error_marks_the_image_lost_and_logs_no_phi(
        ctx: AppContext, model: str, doc: int, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import deid

    def crash(*args: Any, **kwargs: Any) -> NoReturn:
        raise ValueError("invalid value 'QUIXOTE^DULCINEA' for PatientName")

    monkeypatch.setattr(deid, "deidentify_bytes", crash)
    opinion = second_opinion.ask(ctx, doc, "Quixote_Dulcinea.png", _xray_png(4), model)
    lost = second_opinion.wait_for_image(ctx, opinion.id, actor=LOCAL_ADMIN)
    assert lost.image_state == "lost" and "ValueError" in lost.deid_reason
    assert "ValueError" in caplog.text
    for secret in ("QUIXOTE", "Quixote"):
        assert secret not in caplog.text and secret not in lost.deid_reason
