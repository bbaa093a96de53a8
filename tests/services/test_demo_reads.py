"""The demo's simulated reading leaves a finished, adjudicated verification round and a pending re-read round."""

from __future__ import annotations

from services import demo, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.projects import project_id, projects_for
from tests.services.factories import make_items, user_id


def test_demo_reads_finish_a_round(ctx: AppContext) -> None:
    demo.load_demo(ctx, with_data=False)
    project = next(p for p in projects_for(ctx, user_id(ctx, "lead"), "lead") if p.name == demo.AL_PROJECT.name)
    items = make_items(ctx, project.id, 14)
    truth = {item: ("pneumonia" if i % 3 == 0 else "normal") for i, item in enumerate(items)}
    line = demo.demo_reads(ctx, project.id, truth, primary=12, sample=8, seed=3)
    assert "reader1 labelled 12 cases" in line
    first, reread = verification.rounds(ctx, project_id(ctx, demo.AL_PROJECT.name), actor=LOCAL_ADMIN)
    assert (first.status, first.sample_size, first.reads_done, first.reads_total) == ("closed", 8, 16, 16)
    assert first.adjudicated == first.disagreements
    assert {r for r, _, _ in first.per_reader} == {"reader2", "reader3"}
    assert reread.kind == "intra_reader" and reread.reads_done == 0 and reread.reads_total == 10
