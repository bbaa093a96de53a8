"""`medlabel bench retrain`: the product's active-learning retrain end to end, and pool scoring alone.

Issue goal: retrain plus re-score of 10,000 items in under 10 seconds.

Method (figures and discussion in docs/benchmarks.md, "Active learning in the product"):

* A throw-away installation (SQLite in a temporary folder, local store) with one reader and one
  single-label project ("normal", "pneumonia"), as ``medlabel bench second-opinion`` builds its own.
* ``items`` released items in one transaction: 8x8 grey PNGs whose left and right halves have
  brightness a and b (a, b uniform in 0.05..0.95, |a - b| > 0.08; the truth is "pneumonia" when
  a > b, alternating item by item so any prefix holds both classes), each file unique, stored in the
  installation's store -- the pattern images of ``tests/services/test_active_learning.py``.
* Model: that module's tiny hand-built ONNX (a linear 3-d backbone -- mean of the left half, of the
  right half, overall mean -- and a weak softmax head), registered as ``tiny``; the project is
  pre-labelled with it (so every item has stored probabilities, an embedding and a model-size
  rendition) and its queue set to margin. Then ``labels`` items are labelled truthfully by the reader
  (one transaction). None of this is timed.
* Timed (``retrain_s``): ``services.learning.retrain`` end to end, with a job reporter that
  records the clock at every progress message and every ``should_stop`` poll. ``steps_s`` splits the
  run at the progress messages, each mapped by its text to a step name (``STEP_PATTERNS``; a message
  that matches none counts under its own text, digits as N). Retrain sends no message when
  pre-labelling starts (the first one comes after the first batch is written), so the pre-label step
  starts at the first ``should_stop`` poll after the "registering" message, i.e. once the new version
  is registered; without such a poll the register step would include the pre-label start-up.
  The steps add up to a little less than ``retrain_s`` (argument checks before the first message,
  the report after the last).
* ``score_pool_s``: ``services.learning.score_pool`` alone for margin, hybrid and k-center,
  each after ``configure`` set the project's strategy (which scores once, untimed), best of 3
  (``run(repeats=...)``).
"""

from __future__ import annotations

import io
import json
import os
import re
import time
from typing import Any

import click

from medlabel.values import ModelRef, ref_of

GOAL_S = 10
PROJECT = "Bench retrain"
LABELS = ("normal", "pneumonia")
SCORE_STRATEGIES = ("margin", "hybrid", "kcenter")
BACKBONES = {
    "tiny": "tiny 3-d test backbone (linear on 8x8 images: left-half, right-half and overall mean)",
    "densenet": "DenseNet-121 topology and weights size (inference.build_densenet121_shaped, random weights, "
                "~28 MB, 1024-d features) at a 32x32x3 input, 2 softmax classes",
}
BACKBONE = BACKBONES["tiny"]
#: Progress messages of ``retrain`` -> step names (first match wins); "done" ends the last step.
STEP_PATTERNS: tuple[tuple[str, str], ...] = (
    (r"^reading labels", "read_labels_and_embeddings"),
    (r"^fitting the head", "fit_head"),
    (r"^(exporting|composing|validating)", "export_compose_validate"),
    (r"^registering", "register"),
    (r"^pre-?labell?ing", "prelabel"),
    (r"^scoring", "score_and_switch"),
    (r"^done\b", "done"),
)
_END = "done"


def step_name(message: str) -> str:
    """The step a progress message of ``retrain`` belongs to; unknown messages by their own text (digits as N)."""
    text = message.strip()
    for pattern, name in STEP_PATTERNS:
        if re.search(pattern, text, flags=re.IGNORECASE):
            return name
    return re.sub(r"\d+", "N", text) or "(no message)"


class ClockReporter:
    """A job reporter (services.jobs.protocol) that records when each progress message and stop poll came."""

    actor_id: int | None = None  # the CLI's: the local administrator

    def __init__(self) -> None:
        self.messages: list[tuple[float, str]] = []
        self.polls: list[float] = []

    def progress(self, done: int, total: int | None = None, message: str = "") -> None:
        self.messages.append((time.perf_counter(), message))

    def should_stop(self) -> bool:
        self.polls.append(time.perf_counter())
        return False

    def steps(self) -> dict[str, float]:
        """Seconds per step, in the order first seen; a step runs from its first message to the next step's.

        Pre-labelling reports only after each batch, so when the messages go straight from "register" to
        "prelabel", the pre-label step starts at the first stop poll after the register message."""
        marks = [(t, step_name(m)) for t, m in self.messages]
        for n, (t, name) in enumerate(marks[:-1]):
            if name == "register" and marks[n + 1][1] == "prelabel":
                poll = next((p for p in self.polls if t < p < marks[n + 1][0]), None)
                if poll is not None:
                    marks.insert(n + 1, (poll, "prelabel"))
                break
        out: dict[str, float] = {}
        for (t0, name), (t1, _) in zip(marks, marks[1:], strict=False):
            if name != _END:
                out[name] = out.get(name, 0.0) + (t1 - t0)
        return {name: round(seconds, 4) for name, seconds in out.items()}


def tiny_model(gain: float = 1.0) -> bytes:
    """The tests' tiny ONNX: embedding = (left-half mean, right-half mean, overall mean), a weak softmax head."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.zeros((64, 3), dtype=np.float32)
    for r in range(8):
        for c in range(8):
            w[r * 8 + c, 0 if c < 4 else 1] = 1 / 32
    w[:, 2] = 1 / 64
    head = np.array([[-gain, gain], [gain, -gain], [0.0, 0.0]], dtype=np.float32)
    nodes = [helper.make_node("Flatten", ["image"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "W"], ["embedding"]),
             helper.make_node("Gemm", ["embedding", "H", "B"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)]
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])
    graph = helper.make_graph(nodes, "tiny", [image],
                              [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 2])],
                              [numpy_helper.from_array(w, "W"), numpy_helper.from_array(head, "H"),
                               numpy_helper.from_array(np.zeros(2, dtype=np.float32), "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def pattern_pairs(n: int, seed: int = 7) -> list[tuple[float, float]]:
    """``n`` (a, b) brightness pairs, |a - b| > 0.08, truth alternating: even items a > b ('pneumonia')."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pairs: list[tuple[float, float]] = []
    while len(pairs) < n:
        for a, b in rng.uniform(0.05, 0.95, size=(2 * (n - len(pairs)) + 8, 2)):
            if abs(a - b) > 0.08 and len(pairs) < n:
                hi, lo = max(a, b), min(a, b)
                pairs.append((float(hi), float(lo)) if len(pairs) % 2 == 0 else (float(lo), float(hi)))
    return pairs


def truth(pair: tuple[float, float]) -> str:
    return "pneumonia" if pair[0] > pair[1] else "normal"


def png(a: float, b: float, n: int) -> bytes:
    import numpy as np
    from PIL import Image

    pixels = np.zeros((8, 8), dtype=np.uint8)
    pixels[:, :4], pixels[:, 4:] = round(a * 255), round(b * 255)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue() + f"item {n}".encode()  # trailing bytes keep every file unique


def densenet_model() -> bytes:
    """DenseNet-121-sized (7.0 M parameters, 1024-d ``features``) at 32x32 input with a 2-class softmax
    head: a real model size for validation and registration, at a compute that pre-labels 10,000 items
    in the setup."""
    import onnx
    from onnx import helper

    from inference import build_densenet121_shaped

    model = onnx.load_from_string(build_densenet121_shaped(seed=0, n_classes=2, input_hw=(32, 32)))
    last = model.graph.node[-1]
    if last.op_type != "Sigmoid":
        raise RuntimeError(f"unexpected DenseNet-shaped output node {last.op_type}")
    model.graph.node.remove(last)
    model.graph.node.append(helper.make_node("Softmax", list(last.input), list(last.output), axis=1))
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _corpus(ctx: Any, items: int, labels: int, backbone: str = "tiny") -> str:
    """Reader, project, pattern items, the tiny model with its predictions, margin queue, truthful labels."""
    from db.models import Annotation, AnnotationKind, DeidStatus, Item
    from services import accounts, authz
    from services import learning as al
    from services.items import random_key
    from services.models import prelabel, register_model
    from services.projects import LabelSpec, ProjectSpec, create_project

    reader = accounts.add_user(ctx, "bench-reader", "bench-password", "reader")
    pid = create_project(ctx, ProjectSpec(name=PROJECT, task_type="single_label", readers=("bench-reader",),
                                          labels=(LabelSpec(LABELS[0], "1"), LabelSpec(LABELS[1], "2"))))
    pairs = pattern_pairs(items)
    with ctx.sessions.begin() as session:
        rows = []
        for n, (a, b) in enumerate(pairs):
            digest, path = ctx.store.put(png(a, b, n), ".png")
            rows.append(Item(project_id=pid, content_hash=digest, stored_path=path, kind="photo", modality="OT",
                             width=8, height=8, deid_status=DeidStatus.RELEASED, random_key=random_key(0, digest)))
        session.add_all(rows)
        session.flush()
        ids = [row.id for row in rows]
    if backbone == "densenet":
        model = register_model(ctx, densenet_model(), name="tiny", labels=list(LABELS))
    else:
        model = register_model(ctx, tiny_model(), name="tiny", labels=list(LABELS))
    predicted = prelabel(ctx, pid, "tiny").predicted
    if predicted != items:
        raise RuntimeError(f"the tiny model pre-labelled {predicted} of {items} items")
    al.configure(ctx, pid, "margin", al.DEFAULT_BATCH_SIZE, 0, actor=authz.LOCAL_ADMIN)
    with ctx.sessions.begin() as session:
        session.add_all(Annotation(item_id=item_id, user_id=reader.id, kind=AnnotationKind.LABEL,
                                   labels=[truth(pair)]) for item_id, pair in zip(ids[:labels], pairs, strict=False))
    return ref_of(model.name, model.version)


def _best_score_pool(ctx: Any, strategy: str, repeats: int) -> tuple[float, int]:
    from services import authz
    from services import learning as al
    from services.projects import project_id

    if strategy not in al.STRATEGY_CHOICES:
        raise click.UsageError(f"services.learning has no strategy {strategy!r}")
    pid = project_id(ctx, PROJECT)
    al.configure(ctx, pid, strategy, al.DEFAULT_BATCH_SIZE, 0, actor=authz.LOCAL_ADMIN)
    best, scored = float("inf"), 0
    for _ in range(repeats):
        start = time.perf_counter()
        scored = al.score_pool(ctx, pid).scored
        best = min(best, time.perf_counter() - start)
    return best, scored


def check(items: int, labels: int, repeats: int = 3) -> None:
    """``click.BadParameter`` for sizes the benchmark cannot run."""
    if items < 50:
        raise click.BadParameter(f"at least 50 items, not {items}", param_hint="--items")
    if labels < 2:
        raise click.BadParameter(f"at least 2 labels (one per class), not {labels}", param_hint="--labels")
    if labels >= items:
        raise click.BadParameter(f"{labels} labels for {items} items: label fewer items than the project holds, "
                                 "so that some pool is left to pre-label and score", param_hint="--labels")
    if repeats < 1:
        raise click.BadParameter(f"at least 1 score_pool run per strategy, not {repeats}")


def run(items: int = 10_000, labels: int = 500, repeats: int = 3, backbone: str = "tiny") -> dict[str, Any]:
    """Build the installation, time one retrain and ``score_pool`` per strategy; the figures as a dict."""
    from medlabel.benchmarks.installation import throwaway_installation
    from services import learning as al
    from services.projects import project_id

    check(items, labels, repeats)
    with throwaway_installation("medlabel-bench-retrain-") as ctx:
        start = time.perf_counter()
        previous = _corpus(ctx, items, labels, backbone)
        setup_s = time.perf_counter() - start

        reporter = ClockReporter()
        start = time.perf_counter()
        report = al.retrain(ctx, project_id(ctx, PROJECT), reporter=reporter)
        retrain_s = time.perf_counter() - start

        score_pool_s: dict[str, float] = {}
        scored_by: dict[str, int] = {}
        for strategy in SCORE_STRATEGIES:
            seconds, scored = _best_score_pool(ctx, strategy, repeats)
            score_pool_s[strategy], scored_by[strategy] = round(seconds, 4), scored
    new_model = ModelRef.parse(report.model_ref)
    return {
        "items": items,
        "labels": labels,
        "retrain_s": round(retrain_s, 4),
        "steps_s": reporter.steps(),
        "score_pool_s": score_pool_s,
        "score_pool_repeats": repeats,
        "goal_s": GOAL_S,
        "within_goal": retrain_s < GOAL_S,
        "backbone": BACKBONES[backbone],
        "embedding_dim": 1024 if backbone == "densenet" else 3,
        "cpu_count": os.cpu_count(),
        "previous_model": previous,
        "new_model": report.model_ref,
        "new_model_name": new_model.name,
        "new_model_version": new_model.version,
        "trained_on": report.n_labels,
        "holdout": report.metrics.get("holdout"),
        "auroc": report.metrics.get("auroc"),
        "strategy": report.strategy,
        "predicted_items": report.predicted,
        "scored_items": report.scored,
        # The corpus has single reads only, so the adoption gate (services.models.gate) holds the new
        # version for a lead: the pool is scored, but the scores are not written (scored_items 0).
        "adopted": report.adopted,
        "score_pool_scored": scored_by,
        "progress_messages": len(reporter.messages),
        "setup_s": round(setup_s, 2),
    }


@click.command("retrain")
@click.option("--items", default=10_000, show_default=True, type=click.IntRange(50, 1_000_000),
              help="Released pattern items in the project.")
@click.option("--labels", default=500, show_default=True, type=click.IntRange(2, 1_000_000),
              help="Items labelled (truthfully, one reader) before the retrain; fewer than --items.")
@click.option("--backbone", type=click.Choice(sorted(BACKBONES)), default="tiny", show_default=True,
              help="tiny: the tests' 3-d backbone; densenet: DenseNet-121-sized (28 MB, 1024-d embeddings).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(items: int, labels: int, backbone: str, as_json: bool) -> None:
    """Active-learning retrain end to end (fit, compose, register, pre-label, re-score) on a throw-away
    project of pattern images with the chosen backbone, per step; then score_pool per strategy."""
    check(items, labels)
    result = run(items, labels, backbone=backbone)
    if as_json:
        click.echo(json.dumps(result))
        return
    verdict = "within" if result["within_goal"] else "over"
    click.echo(f"retrain of {result['items']} items on {result['labels']} labels: {result['retrain_s']:.2f} s "
               f"({verdict} the {result['goal_s']} s goal), new model {result['new_model']}, "
               f"{result['predicted_items']} pre-labelled, {result['scored_items']} scored")
    for name, seconds in result["steps_s"].items():
        click.echo(f"  {name}: {seconds:.2f} s")
    pools = ", ".join(f"{s} {t:.2f} s" for s, t in result["score_pool_s"].items())
    click.echo(f"score_pool (best of {result['score_pool_repeats']}): {pools}")
