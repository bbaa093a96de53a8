"""Model registry and pre-labelling: suggestions reach the Label page's case."""

from __future__ import annotations

import pytest

from medlabel.errors import InputError, NotFoundError
from services import labelling
from services.context import AppContext
from services.demo import SAMPLE_DATA
from services.demo_model import LABELS, train
from services.models import deactivate, list_models, prelabel, register_model, resolve
from tests.services.factories import make_items, make_project, user_id


@pytest.fixture(scope="module")
def demo_model() -> bytes:
    return train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes


def test_demo_model_is_honest_and_valid() -> None:
    trained = train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz")
    assert 0.85 < trained.test_auroc < 0.99 and trained.test_size == 624


def test_register_prelabel_and_suggest(ctx: AppContext, demo_model: bytes) -> None:
    pid = make_project(ctx)
    make_items(ctx, pid, 5, width=28, height=28)
    first = register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    second = register_model(ctx, demo_model, name="cxr", labels=list(LABELS))
    assert (first.version, second.version) == (1, 2)
    assert resolve(ctx, "cxr").version == 2 and resolve(ctx, "cxr:1").version == 1
    report = prelabel(ctx, pid, "cxr")
    assert report.predicted == 5 and not report.failed
    assert prelabel(ctx, pid, "cxr").predicted == 0  # resumable: nothing left to do
    case = labelling.next_case(ctx, pid, user_id(ctx, "rad1"))
    assert [s.label for s in case.suggestions] and case.model == "cxr v2"
    assert abs(sum(s.probability for s in case.suggestions) - 1.0) < 1e-5
    deactivate(ctx, "cxr:2")
    assert [m.is_active for m in list_models(ctx, "cxr")] == [True, False]
    with pytest.raises(NotFoundError):
        resolve(ctx, "nope")


def test_bad_model_files_are_refused(ctx: AppContext, demo_model: bytes) -> None:
    with pytest.raises(InputError, match="3 labels"):
        register_model(ctx, demo_model, name="cxr", labels=["a", "b", "c"])
    with pytest.raises(InputError):
        register_model(ctx, b"not onnx at all", name="cxr", labels=["a", "b"])
    assert list_models(ctx) == []
