"""Active learning in the product: pool scores, queue reasons, retraining (and its atomicity), the dashboard.

The project's images are 8x8 grey squares whose left and right halves have brightness a and b; the truth
is 'pneumonia' when a > b. The first model is a tiny hand-built ONNX: a linear backbone (embedding =
mean of the left half, mean of the right half, overall mean) and a weak softmax head on it, so the model
is least sure where a and b are close.
"""

from __future__ import annotations

import inspect
import io
import re
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from sqlalchemy import Engine, event, select

import active_learning
import inference
from db.models import ActiveLearningRound, Annotation, AnnotationKind, DeidStatus, Item, Prediction, Project
from medlabel.benchmarks.retrain import png, tiny_model  # the bench builds the same pattern project
from medlabel.errors import ConflictError, InputError, NotFoundError
from services import labelling, verification
from services import learning as al
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.items import random_key
from services.jobs.protocol import JobCancelled, NullReporter
from services.learning import retraining as al_retrain
from services.models import list_models, prelabel, register_model, resolve
from services.projects import project_id as pid_of
from tests.services.factories import add_lead, make_project, user_id

LABELS = ["normal", "pneumonia"]
PROJECT = "Chest"


def tiny_multilabel_model(gain: float = 2.0) -> bytes:
    """Two independent findings: 'normal' ~ sigmoid(gain (right mean - 0.5)), 'pneumonia' ~ sigmoid(gain
    (left mean - 0.5)) -- deliberately naive, for the multi-label code paths."""
    w = np.zeros((64, 2), dtype=np.float32)
    for r in range(8):
        for c in range(8):
            w[r * 8 + c, 0 if c < 4 else 1] = 1 / 32
    head = np.array([[0.0, gain], [gain, 0.0]], dtype=np.float32)
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["embedding"]),
             helper.make_node("Gemm", ["embedding", "H", "B"], ["logits"]),
             helper.make_node("Sigmoid", ["logits"], ["probabilities"])]
    graph = helper.make_graph(nodes, "tiny-ml", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(head, "H"),
                               numpy_helper.from_array(np.full(2, -gain / 2, dtype=np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_pattern_items(ctx: AppContext, project_id: int, pairs: list[tuple[float, float]]) -> list[int]:
    with ctx.sessions.begin() as session:
        items = []
        for n, (a, b) in enumerate(pairs):
            digest, path = ctx.store.put(png(a, b, n), ".png")
            item = Item(project_id=project_id, content_hash=digest, stored_path=path, kind="photo", modality="OT",
                        width=8, height=8, deid_status=DeidStatus.RELEASED, random_key=random_key(0, digest))
            session.add(item)
            items.append(item)
        session.flush()
        return [item.id for item in items]


def label(ctx: AppContext, item_id: int, username: str, labels: list[str],
          kind: AnnotationKind = AnnotationKind.LABEL) -> None:
    with ctx.sessions.begin() as session:
        session.add(Annotation(item_id=item_id, user_id=user_id(ctx, username), kind=kind, labels=labels))


def truth(pair: tuple[float, float]) -> str:
    return "pneumonia" if pair[0] > pair[1] else "normal"


PAIRS = [(a, b) for a, b in np.random.default_rng(7).uniform(0.05, 0.95, size=(40, 2)) if abs(a - b) > 0.08][:32]


@pytest.fixture
def project(ctx: AppContext) -> dict[str, Any]:
    """A project with 32 pattern items, pre-labelled by the tiny model (registered as 'tiny')."""
    pid = make_project(ctx, PROJECT, readers=("rad1", "rad2", "rad3", "rad4"))
    ids = make_pattern_items(ctx, pid, PAIRS)
    register_model(ctx, tiny_model(), name="tiny", labels=LABELS)
    prelabel(ctx, pid, "tiny")
    return {"id": pid, "items": ids, "pairs": dict(zip(ids, PAIRS, strict=True))}


def scores(ctx: AppContext, project_id: int) -> dict[int, float | None]:
    with ctx.reads() as session:
        return dict(session.execute(select(Item.id, Item.al_score).where(Item.project_id == project_id)).all())


def probabilities(ctx: AppContext, model_name: str) -> dict[int, dict[str, float]]:
    model = resolve(ctx, model_name)
    with ctx.reads() as session:
        rows = session.execute(select(Prediction.item_id, Prediction.probabilities)
                               .where(Prediction.model_id == model.id)).all()
    return {i: p for i, p in rows}


def project_row(ctx: AppContext, project_id: int) -> tuple[str, dict[str, Any]]:
    with ctx.reads() as session:
        row = session.get(Project, project_id)
        assert row is not None
        return row.queue_strategy, dict(row.settings or {})


def label_truthfully(ctx: AppContext, project: dict[str, Any], items: list[int], username: str = "rad1") -> None:
    for item in items:
        label(ctx, item, username, [truth(project["pairs"][item])])


# ---------------------------------------------------------------------------------------------------- scores


def test_margin_scores_put_the_most_uncertain_item_first(ctx: AppContext, project: dict[str, Any]) -> None:
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 10, 0, actor=LOCAL_ADMIN)
    stored = scores(ctx, project["id"])
    probs = probabilities(ctx, "tiny")
    gap = {i: abs(p["pneumonia"] - p["normal"]) for i, p in probs.items()}
    assert all(stored[i] == pytest.approx(1 - gap[i], abs=1e-5) for i in project["items"])
    by_score = sorted(project["items"], key=lambda i: -stored[i])  # type: ignore[operator]  # every item has a score once the strategy ran
    assert by_score[:5] == sorted(project["items"], key=lambda i: gap[i])[:5]
    # the queue (same claim function as before) serves in that order, and says why
    case = labelling.next_case(ctx, project["id"], user_id(ctx, "rad1"))
    assert case is not None and case.item_id == by_score[0]
    p = probs[case.item_id]
    top, second = sorted(LABELS, key=lambda lab: -p[lab])
    assert case.reason == f"model unsure: {top} {round(100 * p[top])}%, {second} {round(100 * p[second])}%"


def test_queue_reason_per_strategy(ctx: AppContext, project: dict[str, Any]) -> None:
    item = project["items"][0]
    assert al.queue_reason(ctx, item) is None  # random order: no reason, no scores
    al.configure(ctx, pid_of(ctx, PROJECT), "entropy", 10, 0, actor=LOCAL_ADMIN)
    assert re.fullmatch(r"model unsure: (normal|pneumonia) \d+%, (normal|pneumonia) \d+%", al.queue_reason(ctx, item))
    label_truthfully(ctx, project, project["items"][:4])
    al.configure(ctx, pid_of(ctx, PROJECT), "kcenter", 5, 0, actor=LOCAL_ADMIN)
    assert al.queue_reason(ctx, project["items"][10]) == "far from labelled cases"
    al.configure(ctx, pid_of(ctx, PROJECT), "random", 5, 0, actor=LOCAL_ADMIN)
    assert al.queue_reason(ctx, item) is None and set(scores(ctx, project["id"]).values()) == {None}
    assert al.queue_reason(ctx, 10**9) is None


def test_batch_strategies_put_their_batch_on_top(ctx: AppContext, project: dict[str, Any]) -> None:
    labelled = project["items"][:6]
    label_truthfully(ctx, project, labelled)
    for strategy in ("kcenter", "hybrid", "kmeanspp"):
        al.configure(ctx, pid_of(ctx, PROJECT), strategy, 5, 0, actor=LOCAL_ADMIN)
        stored = scores(ctx, project["id"])
        batch = sorted((i for i in stored if stored[i] > 1.0), key=lambda i: -stored[i])  # type: ignore[operator]  # every item has a score once the strategy ran
        assert len(batch) == 5 and not set(batch) & set(labelled), strategy
        assert all(0.0 <= stored[i] <= 1.0 for i in stored if i not in batch), strategy  # type: ignore[operator]  # every item has a score once the strategy ran
    # k-center: the first pick is the unlabelled item farthest from every labelled one
    al.configure(ctx, pid_of(ctx, PROJECT), "kcenter", 5, 0, actor=LOCAL_ADMIN)
    stored = scores(ctx, project["id"])
    first = max(stored, key=lambda i: stored[i])  # type: ignore[arg-type, return-value]  # every item has a score once the strategy ran
    emb = {i: np.array(project["pairs"][i]) for i in project["items"]}
    dist = {i: min(np.linalg.norm(emb[i] - emb[j]) for j in labelled) for i in project["items"] if i not in labelled}
    assert dist[first] == pytest.approx(max(dist.values()), rel=0.05)


def test_missing_embeddings_are_computed_and_stored(ctx: AppContext, project: dict[str, Any]) -> None:
    """Predictions made before embeddings were stored get them on first use (here: a k-center score)."""
    model = resolve(ctx, "tiny")
    with ctx.sessions.begin() as session:
        original = dict(session.execute(select(Prediction.item_id, Prediction.embedding)
                                        .where(Prediction.model_id == model.id)).all())
        for row in session.scalars(select(Prediction).where(Prediction.model_id == model.id)):
            row.embedding = None
    label_truthfully(ctx, project, project["items"][:4])
    al.configure(ctx, pid_of(ctx, PROJECT), "kcenter", 3, 0, actor=LOCAL_ADMIN)
    with ctx.reads() as session:
        refilled = dict(session.execute(select(Prediction.item_id, Prediction.embedding)
                                        .where(Prediction.model_id == model.id)).all())
    expected = embeddings_of(ctx, project["items"])
    for n, item in enumerate(project["items"]):
        np.testing.assert_allclose(np.frombuffer(refilled[item], "<f4"), expected[n], atol=1e-6)
        if original[item] is not None:  # the pre-labelling stored the same embedding in the first place
            np.testing.assert_allclose(np.frombuffer(original[item], "<f4"), expected[n], atol=1e-6)
    assert sum(v > 1.0 for v in scores(ctx, project["id"]).values() if v is not None) == 3


def test_multilabel_project(ctx: AppContext) -> None:
    pid = make_project(ctx, PROJECT, task_type="multi_label", readers=("rad1", "rad2"))
    ids = make_pattern_items(ctx, pid, PAIRS)
    pairs = dict(zip(ids, PAIRS, strict=True))
    register_model(ctx, tiny_multilabel_model(), name="tiny-ml", labels=LABELS)
    prelabel(ctx, pid, "tiny-ml")
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 0, actor=LOCAL_ADMIN)
    probs = probabilities(ctx, "tiny-ml")
    stored = scores(ctx, pid)
    for item in ids:  # multi-label margin: the mean over findings of 1 - |2p - 1|
        expected = np.mean([1 - abs(2 * probs[item][lab] - 1) for lab in LABELS])
        assert stored[item] == pytest.approx(expected, abs=1e-5)
    reason = al.queue_reason(ctx, ids[0])
    assert reason is not None and reason.startswith("model unsure: ")
    assert {part.split()[0] for part in reason.removeprefix("model unsure: ").split(", ")} == set(LABELS)

    def findings(item: int) -> list[str]:  # the truth: each half brighter than mid-grey is a finding
        a, b = pairs[item]
        return [lab for lab, v in (("normal", b), ("pneumonia", a)) if v > 0.5] or ["indeterminate"]

    for item in ids[:24]:
        label(ctx, item, "rad1", findings(item))
    report = al.retrain(ctx, pid_of(ctx, PROJECT))
    assert report.model == "chest-al v1" and report.metrics["auroc"] is not None
    # single reads only: nothing verified shows it is not worse, so a lead adopts it (services/models/gate.py)
    assert not report.adopted and "verified" in report.gate["reason"]
    lead = add_lead(ctx, "lead", PROJECT)
    assert al.decide(ctx, report.round_id, "adopt", lead).state == "approved"
    learnable = [i for i in ids[:24] if findings(i) != ["indeterminate"]]
    assert report.n_labels == len(learnable)  # 'indeterminate' answers are not findings to learn from
    new = probabilities(ctx, "chest-al")
    assert all(0.0 <= new[i][lab] <= 1.0 for i in ids for lab in LABELS)
    rows = al.predictions_vs_truth(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert sorted(r.item_id for r in rows) == sorted(learnable)
    for r in rows:
        assert r.predicted == tuple(lab for lab in LABELS if new[r.item_id][lab] >= 0.5)
        expected = ("false positive" if set(r.predicted) - set(r.truth) else
                    "false negative" if set(r.truth) - set(r.predicted) else "correct")
        assert r.outcome == expected
    suspects = al.suspected_label_errors(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert all(s.suggested.endswith((" present", " absent")) for s in suspects)


def test_configure_refuses_bad_settings_and_changes_nothing(ctx: AppContext, project: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="unknown strategy 'tta_disagreement'"):
        al.configure(ctx, pid_of(ctx, PROJECT), "tta_disagreement", 10, 0, actor=LOCAL_ADMIN)
    with pytest.raises(InputError, match="batch size"):
        al.configure(ctx, pid_of(ctx, PROJECT), "margin", 0, 0, actor=LOCAL_ADMIN)
    with pytest.raises(InputError, match="retrain every"):
        al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, -1, actor=LOCAL_ADMIN)
    assert project_row(ctx, project["id"])[0] == "random"
    with pytest.raises(NotFoundError):
        al.configure(ctx, 10**6, "margin", 5, 0, actor=LOCAL_ADMIN)


# ---------------------------------------------------------------------------------------------------- retrain


def images_of(ctx: AppContext, item_ids: list[int]) -> np.ndarray:
    """The stored images of these items as the tiny model's input batch."""
    spec = inference.inspect_model(tiny_model(), LABELS)
    with ctx.reads() as session:
        paths = dict(session.execute(select(Item.id, Item.stored_path).where(Item.id.in_(item_ids))).all())
    return np.concatenate([inference.preprocess(ctx.store.get(paths[i]), spec.input) for i in item_ids])


def embeddings_of(ctx: AppContext, item_ids: list[int]) -> np.ndarray:
    """The tiny backbone's embeddings of these items (the registry's embedding tensor, run by onnxruntime)."""
    spec = inference.inspect_model(tiny_model(), LABELS)
    out = inference.run(spec, images_of(ctx, item_ids), model_bytes=tiny_model(), embeddings=True)
    assert spec.embedding_tensor == "embedding" and out.embeddings is not None
    return out.embeddings


class HeadSpy:
    """Wraps active_learning.fit_head and keeps the heads it returns."""

    def __init__(self) -> None:
        self.heads: list[Any] = []
        self.real = active_learning.fit_head

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        head, metrics = self.real(*args, **kwargs)
        self.heads.append(head)
        return head, metrics


def test_retrain_registers_a_version_equal_to_the_sklearn_head(ctx: AppContext, project: dict[str, Any],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 0, actor=LOCAL_ADMIN)
    before = scores(ctx, project["id"])
    items = project["items"]
    label_truthfully(ctx, project, items[:16])
    for item in items[16:22]:  # verified: a second, agreeing verification read
        label(ctx, item, "rad2", [truth(project["pairs"][item])])
        label(ctx, item, "rad3", [truth(project["pairs"][item])], AnnotationKind.VERIFICATION)
    spy = HeadSpy()
    monkeypatch.setattr(active_learning, "fit_head", spy)
    reporter = NullReporter()
    report = al.retrain(ctx, pid_of(ctx, PROJECT), actor_id=user_id(ctx, "rad1"), reporter=reporter)
    assert report.model == "chest-al v1" and report.previous_model == "tiny:1" and report.n_labels == 22
    assert report.metrics["holdout"] == "verified" and report.metrics["n_holdout"] == 6
    assert report.metrics["label_counts"] == {lab: sum(truth(project["pairs"][i]) == lab for i in items[:22])
                                              for lab in LABELS}
    assert report.predicted == len(items) and report.scored == len(items)
    assert reporter.done == reporter.total  # progress reached the end
    # the registered version reproduces the scikit-learn head on the same embeddings
    new = resolve(ctx, "chest-al")
    sess = ort.InferenceSession(ctx.store.get(_stored_path(ctx, new.id)), providers=["CPUExecutionProvider"])
    composed = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"image": images_of(ctx, items)}),
                        strict=True))
    expected = spy.heads[-1].predict_proba(embeddings_of(ctx, items))
    np.testing.assert_allclose(composed["probabilities"], expected, atol=1e-5)
    # its predictions of the pool are stored, the project points at it, and the pool was re-scored
    stored = probabilities(ctx, "chest-al")
    np.testing.assert_allclose([[stored[i][lab] for lab in LABELS] for i in items], expected, atol=1e-5)
    strategy, settings = project_row(ctx, project["id"])
    assert settings["model"] == "chest-al:1" and strategy == "margin"
    after = scores(ctx, project["id"])
    assert after != before
    assert all(after[i] == pytest.approx(1 - abs(stored[i]["pneumonia"] - stored[i]["normal"]), abs=1e-5)
               for i in items)
    (rnd,) = al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert (rnd.n_labels, rnd.strategy, rnd.model, rnd.holdout) == (22, "margin", "chest-al v1", "verified")
    assert rnd.auroc is not None and rnd.auroc > 0.9  # the truth is learnable from the embedding
    # pool items without a stored embedding go through the model instead, with the same answers
    _forget_pool_embeddings(ctx, project["id"], set(items[:22]))
    with ctx.sessions.begin() as session:
        session.execute(Prediction.__table__.delete().where(Prediction.model_id == new.id,
                                                            Prediction.item_id.in_(items[22:])))
    assert prelabel(ctx, project["id"], "chest-al:1").predicted == len(items) - 22
    again = probabilities(ctx, "chest-al")
    np.testing.assert_allclose([[again[i][lab] for lab in LABELS] for i in items], expected, atol=1e-5)
    # a second retrain builds on the same backbone (the old head pruned), as version 2
    label_truthfully(ctx, project, items[22:28])
    second = al.retrain(ctx, pid_of(ctx, PROJECT))
    assert second.model == "chest-al v2" and second.previous_model == "chest-al:1" and second.n_labels == 28
    assert [r.n_labels for r in al.learning_curve(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)] == [22, 28]
    model = onnx.load_from_string(ctx.store.get(_stored_path(ctx, resolve(ctx, "chest-al").id)))
    assert sum(n.op_type == "MatMul" for n in model.graph.node if not n.name.startswith("head")) <= 2


def _stored_path(ctx: AppContext, model_id: int) -> str:
    from db.models import ModelVersion

    with ctx.reads() as session:
        row = session.get(ModelVersion, model_id)
        assert row is not None
        return row.stored_path


def _state(ctx: AppContext, project_id: int) -> tuple[Any, ...]:
    with ctx.reads() as session:
        rounds = session.scalars(select(ActiveLearningRound)).all()
    strategy, settings = project_row(ctx, project_id)
    return strategy, settings.get("model"), scores(ctx, project_id), len(rounds)


def _assert_untouched(ctx: AppContext, project: dict[str, Any], before: tuple[Any, ...]) -> None:
    assert _state(ctx, project["id"]) == before
    assert [(m.name, m.version) for m in list_models(ctx) if m.is_active] == [("tiny", 1)]
    for m in list_models(ctx):
        if m.name != "tiny":
            assert not m.is_active and m.predictions == 0  # withdrawn, nothing left half-written
    case = labelling.next_case(ctx, project["id"], user_id(ctx, "rad4"))
    assert case is not None and case.model == "tiny v1"


@pytest.fixture
def labelled_project(ctx: AppContext, project: dict[str, Any]) -> dict[str, Any]:
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 0, actor=LOCAL_ADMIN)
    label_truthfully(ctx, project, project["items"][:16])
    return project


def test_failure_after_export_registers_nothing(ctx: AppContext, labelled_project: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    before = _state(ctx, labelled_project["id"])

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise OSError("disk full")

    monkeypatch.setattr(al_retrain, "register_model", broken)
    with pytest.raises(OSError, match="disk full"):
        al.retrain(ctx, pid_of(ctx, PROJECT))
    assert [m.name for m in list_models(ctx)] == ["tiny"]
    _assert_untouched(ctx, labelled_project, before)


def _forget_pool_embeddings(ctx: AppContext, project_id: int, labelled: set[int]) -> None:
    """Drop the stored embeddings of the unlabelled items, so pre-labelling must run the model on them."""
    with ctx.sessions.begin() as session:
        for row in session.scalars(select(Prediction).join(Item).where(Item.project_id == project_id)):
            if row.item_id not in labelled:
                row.embedding = None


@pytest.mark.parametrize("path", ["stored embeddings", "model"])
def test_failure_after_registration_withdraws_the_new_version(ctx: AppContext, labelled_project: dict[str, Any],
                                                              monkeypatch: pytest.MonkeyPatch, path: str) -> None:
    if path == "model":
        _forget_pool_embeddings(ctx, labelled_project["id"], set(labelled_project["items"][:16]))
    before = _state(ctx, labelled_project["id"])
    real = al_retrain.prelabel

    def half_then_crash(ctx: AppContext, project_name: str, ref: str, **kwargs: Any) -> Any:
        def progress(n: int) -> None:
            raise RuntimeError("worker lost")

        return real(ctx, project_name, ref, batch_size=8, progress=progress)

    def rows_then_crash(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("worker lost")

    monkeypatch.setattr(al_retrain, "prelabel", half_then_crash)
    if path == "stored embeddings":
        monkeypatch.setattr(al_retrain, "prediction_rows", rows_then_crash)
    with pytest.raises(RuntimeError, match="worker lost"):
        al.retrain(ctx, pid_of(ctx, PROJECT))
    (new,) = [m for m in list_models(ctx) if m.name == "chest-al"]
    assert new.version == 1 and not new.is_active
    with pytest.raises(NotFoundError):
        resolve(ctx, "chest-al")
    _assert_untouched(ctx, labelled_project, before)


class StopAfter:
    """A job reporter that asks to stop once a progress message starts with ``prefix``."""

    actor_id: int | None = None

    def __init__(self, prefix: str) -> None:
        self.prefix, self.stop = prefix, False

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        self.stop = self.stop or message.startswith(self.prefix)

    def should_stop(self) -> bool:
        return self.stop


@pytest.mark.parametrize("stage", ["exporting", "registering", "pre-labelling", "scoring"])
def test_cancel_at_any_stage_keeps_the_previous_model(ctx: AppContext, labelled_project: dict[str, Any],
                                                      stage: str) -> None:
    before = _state(ctx, labelled_project["id"])
    with pytest.raises(JobCancelled):
        al.retrain_job(ctx, al.RetrainParams(project_id=labelled_project["id"]), StopAfter(stage))
    _assert_untouched(ctx, labelled_project, before)


def test_failure_in_the_final_transaction_rolls_it_all_back(ctx: AppContext, labelled_project: dict[str, Any],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    before = _state(ctx, labelled_project["id"])

    def crash(*args: Any, **kwargs: Any) -> Any:
        raise ConflictError("simulated")

    monkeypatch.setattr(al_retrain.q, "add_round", crash)  # after the scores were written in that transaction
    with pytest.raises(ConflictError):
        al.retrain(ctx, pid_of(ctx, PROJECT))
    _assert_untouched(ctx, labelled_project, before)


def test_retrain_refuses_what_it_cannot_learn(ctx: AppContext, project: dict[str, Any]) -> None:
    before = _state(ctx, project["id"])
    only_normal = [i for i in project["items"] if truth(project["pairs"][i]) == "normal"][:6]
    label_truthfully(ctx, project, only_normal)
    with pytest.raises(InputError, match="none yet for: pneumonia"):
        al.retrain(ctx, pid_of(ctx, PROJECT))
    with pytest.raises(InputError, match="unknown strategy"):
        al.retrain(ctx, pid_of(ctx, PROJECT), strategy="best")
    with pytest.raises(NotFoundError):
        al.retrain(ctx, 10**6)
    assert [m.name for m in list_models(ctx)] == ["tiny"] and _state(ctx, project["id"]) == before


def test_retrain_is_due_after_n_new_labels(ctx: AppContext, project: dict[str, Any]) -> None:
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 4, actor=LOCAL_ADMIN)
    label_truthfully(ctx, project, project["items"][:10])
    assert al.maybe_retrain(ctx, pid_of(ctx, PROJECT))  # 10 labels, no round yet
    al.retrain(ctx, pid_of(ctx, PROJECT))
    assert not al.maybe_retrain(ctx, pid_of(ctx, PROJECT))
    label_truthfully(ctx, project, project["items"][10:13])
    assert not al.maybe_retrain(ctx, pid_of(ctx, PROJECT)) and al.status(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN).new_labels == 3
    label_truthfully(ctx, project, project["items"][13:14])
    assert al.maybe_retrain(ctx, pid_of(ctx, PROJECT))
    al.configure(ctx, pid_of(ctx, PROJECT), "margin", 5, 0, actor=LOCAL_ADMIN)
    assert not al.maybe_retrain(ctx, pid_of(ctx, PROJECT))  # 0: on demand only


def test_the_check_after_each_label_loads_no_annotation(ctx: AppContext, project: dict[str, Any]) -> None:
    """``maybe_retrain`` runs after every label (``retrain_if_due``): while a retrain cannot be due it asks a
    few indexed queries (one aggregate over the reads) and loads no annotation row, however many labels the
    project has; the project's labels are read only when it may be due."""
    pid = project["id"]
    al.configure(ctx, pid, "margin", 5, 8, actor=LOCAL_ADMIN)
    label_truthfully(ctx, project, project["items"][:7])
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        assert not al.maybe_retrain(ctx, pid) and al.retrain_if_due(ctx, pid) is None  # 7 < 8 labels
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert 0 < len(statements) <= 8
    assert not [s for s in statements if "annotations.labels" in s], statements  # no read is loaded
    label_truthfully(ctx, project, project["items"][7:8])
    statements.clear()
    event.listen(Engine, "before_cursor_execute", record)
    try:
        assert al.maybe_retrain(ctx, pid)  # 8 labels: the labels are read, and the answer is the same as before
    finally:
        event.remove(Engine, "before_cursor_execute", record)
    assert [s for s in statements if "annotations.labels" in s]


# ---------------------------------------------------------------------------------------------------- dashboard


def test_predictions_beside_the_labels(ctx: AppContext, project: dict[str, Any]) -> None:
    items = project["items"][:12]
    wrong = items[:3]
    for item in items:
        right = truth(project["pairs"][item])
        label(ctx, item, "rad1", [right if item not in wrong else ({"normal", "pneumonia"} - {right}).pop()])
    rows = al.predictions_vs_truth(ctx, pid_of(ctx, PROJECT), actor=LOCAL_ADMIN)
    assert sorted(r.item_id for r in rows) == sorted(items)
    fp = al.predictions_vs_truth(ctx, pid_of(ctx, PROJECT), "false_positive", actor=LOCAL_ADMIN)
    fn = al.predictions_vs_truth(ctx, pid_of(ctx, PROJECT), "false_negative", actor=LOCAL_ADMIN)
    assert sorted(r.item_id for r in fp + fn) == sorted(wrong)  # the tiny model is right wherever the label is
    assert all(r.truth == ("normal",) and r.predicted == ("pneumonia",) for r in fp)
    assert all(r.truth == ("pneumonia",) and r.predicted == ("normal",) for r in fn)
    assert [r.probability for r in fp] == sorted((r.probability for r in fp), reverse=True)
    uncertain = al.predictions_vs_truth(ctx, pid_of(ctx, PROJECT), "uncertain", actor=LOCAL_ADMIN)
    probs = probabilities(ctx, "tiny")
    gaps = [abs(probs[r.item_id]["pneumonia"] - probs[r.item_id]["normal"]) for r in uncertain]
    assert gaps == sorted(gaps) and all(r.provenance == "single read" for r in uncertain)
    assert [r.uncertainty for r in uncertain] == pytest.approx([1 - g for g in gaps], abs=1e-5)
    with pytest.raises(InputError, match="unknown filter"):
        al.predictions_vs_truth(ctx, pid_of(ctx, PROJECT), "wrong", actor=LOCAL_ADMIN)


def test_suspected_label_errors_find_planted_flips(ctx: AppContext, project: dict[str, Any]) -> None:
    items = project["items"]
    clear = [i for i in items if abs(project["pairs"][i][0] - project["pairs"][i][1]) > 0.25]
    flipped = set(clear[:3])
    for item in items:
        right = truth(project["pairs"][item])
        label(ctx, item, "rad1", [right if item not in flipped else ({"normal", "pneumonia"} - {right}).pop()])
    suspects = al.suspected_label_errors(ctx, pid_of(ctx, PROJECT), k=10, actor=LOCAL_ADMIN)
    assert flipped <= {s.item_id for s in suspects}, suspects
    assert len(suspects) <= len(flipped) + 2 and suspects[0].source == "cross-validated"
    for s in suspects:
        assert s.suggested != s.given[0] and s.margin < 0 and s.provenance == "single read"
    assert [s.margin for s in suspects] == sorted(s.margin for s in suspects)


def test_send_to_verification_covers_exactly_those_items(ctx: AppContext, project: dict[str, Any]) -> None:
    if "item_ids" not in inspect.signature(verification.create_round).parameters:
        pytest.skip("needs services.verification.create_round(..., item_ids=[...]) (the lead is adding it)")
    items = project["items"][:8]
    label_truthfully(ctx, project, items)
    rnd = verification.send_to_verification(ctx, project["id"], items[2:5], ["rad2", "rad3"], LOCAL_ADMIN)
    assert rnd.sample_size == 3 and rnd.reads_total == 6
    with ctx.reads() as session:
        from db.models import Assignment

        chosen = set(session.scalars(select(Assignment.item_id).where(Assignment.round_id == rnd.id)))
    assert chosen == set(items[2:5])
    with pytest.raises(InputError, match="at least one item"):
        verification.send_to_verification(ctx, project["id"], [], ["rad2", "rad3"], LOCAL_ADMIN)


# ---------------------------------------------------------------------------------------------------- demo


def test_demo_loop_label_retrain_reorder(ctx: AppContext) -> None:
    from services.demo import SAMPLE_DATA

    data = np.load(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz")
    pid = make_project(ctx, "Demo", readers=("rad1", "rad2"))
    images, y = data["test_images"][:40], data["test_labels"][:40, 0]
    with ctx.sessions.begin() as session:
        ids = []
        for n, image in enumerate(images):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            digest, path = ctx.store.put(buffer.getvalue(), ".png")
            item = Item(project_id=pid, content_hash=digest, stored_path=path, kind="photo", width=28, height=28,
                        deid_status=DeidStatus.RELEASED, random_key=random_key(n, digest))
            session.add(item)
            session.flush()
            ids.append(item.id)
    line = al.setup_active_learning_demo(ctx, pid_of(ctx, "Demo"))
    assert line.startswith("active learning: demo-al v1") and "strategy adaptive" in line and "scored 40" in line
    strategy, settings = project_row(ctx, pid)
    assert strategy == "adaptive" and settings["model"] == "demo-al:1"
    assert settings["active_learning"]["phase"] == "typical"  # no label yet: typical cases first
    (round0,) = al.learning_curve(ctx, pid_of(ctx, "Demo"), actor=LOCAL_ADMIN)
    assert round0.n_labels == 0 and round0.metrics["seed_labels"] == 20
    assert al.setup_active_learning_demo(ctx, pid_of(ctx, "Demo")).endswith("already set up (demo-al:1)")
    first = labelling.next_case(ctx, pid, user_id(ctx, "rad1"))
    assert first is not None and first.reason == al.TYPICAL_REASON
    # label the 16 items the queue serves, with the dataset's answers, then retrain
    reader = user_id(ctx, "rad1")
    case = first
    for _ in range(16):
        assert case is not None
        labelling.submit(ctx, case.assignment_id, reader, labels=[LABELS[int(y[ids.index(case.item_id)])]])
        case = labelling.next_case(ctx, pid, reader)
    before = scores(ctx, pid)
    report = al.retrain(ctx, pid_of(ctx, "Demo"))
    assert report.model == "demo-al v2" and report.n_labels == 16
    assert not report.adopted and scores(ctx, pid) == before  # one reader, nothing verified: a lead decides
    lead = add_lead(ctx, "lead", "Demo")
    al.decide(ctx, report.round_id, "adopt", lead)
    assert scores(ctx, pid) != before
    assert [r.n_labels for r in al.learning_curve(ctx, pid_of(ctx, "Demo"), actor=LOCAL_ADMIN)] == [0, 16]
