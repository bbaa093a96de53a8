"""The variants table cannot mislead on speed: besides the model alone on ready tensors (hundreds of
thousands of images/s for a tiny model), it measures end to end from the project's stored images."""

from __future__ import annotations

from medlabel.settings import Settings
from services import models
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.demo import SAMPLE_DATA
from services.demo_model import LABELS, train
from services.models import register_model
from tests.portal.conftest import signed_in
from tests.services.factories import PASSWORD
from tests.services.test_model_eval import labelled_project


def test_end_to_end_throughput_is_measured_on_the_projects_images(ctx: AppContext, portal_env: Settings) -> None:
    pid = labelled_project(ctx)["project_id"]
    register_model(ctx, train(SAMPLE_DATA / "pneumoniamnist" / "pneumoniamnist.npz").onnx_bytes, name="cxr",
                   labels=list(LABELS))
    (row,) = models.compare_variants(ctx, "cxr", pid, n_boot=20, actor=LOCAL_ADMIN).rows
    assert row.end_to_end_per_s is not None and 0 < row.end_to_end_per_s < row.throughput_per_s
    (alone,) = models.compare_variants(ctx, "cxr", None, actor=LOCAL_ADMIN).rows
    assert alone.end_to_end_per_s is None

    at = signed_in("lead1", PASSWORD)
    at.switch_page("views/models.py").run()
    next(b for b in at.button if b.label == "Measure and evaluate").click()
    at.run()
    assert not at.exception, at.exception
    compared = at.dataframe[1].value
    assert "Images/s (batch 8)" not in compared.columns
    model_only, end_to_end = compared["Model only (images/s)"][0], compared["End to end (images/s)"][0]
    assert "." not in model_only and "." not in end_to_end  # 3 significant figures, no 629475.2
    assert float(end_to_end.replace(",", "")) < float(model_only.replace(",", ""))
