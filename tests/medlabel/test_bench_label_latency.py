"""`medlabel bench label-latency` times first views of real-size DICOM, at the head of a real backlog."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from db.models import Item
from medlabel.benchmarks import ui as bench
from medlabel.settings import Settings
from services import labelling
from services.context import AppContext
from services.projects import project_id
from tests.services.factories import user_id

pytestmark = [pytest.mark.bench, pytest.mark.slow]


def test_timed_items_are_uncached_real_size_dicom_at_the_head_of_a_backlog(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "SERVICE_ITEMS_PER_KIND", 1)
    ctx = AppContext.from_settings(settings)
    try:
        head, service = bench.build(ctx, real=4, backlog=300)
        assert [i.kind for i in head] == ["CR", "CR", "CR", "CT"] and {i.kind for i in service} == {"CR", "CT"}
        with ctx.reads() as session:
            sizes = {row.id: (row.width, row.height, row.modality) for row in session.scalars(
                select(Item).where(Item.id.in_([i.item_id for i in head])))}
            total = session.scalar(select(func.count()).select_from(Item))
        assert total == 300 + len(head) + len(service)
        assert [sizes[i.item_id] for i in head] == [(2000, 2000, "CR")] * 3 + [(512, 512, "CT")]
        # Nothing is rendered before the run: every timed view is a first view.
        assert [bench.derived_count(settings.store_dir, i.content_hash) for i in head] == [0] * 4
        # The queue serves them first, in the order the bench expects.
        pid, reader = project_id(ctx, bench.PROJECT), user_id(ctx, "bench")
        served = []
        for _ in head:
            case = labelling.next_case(ctx, pid, reader)
            assert case is not None
            served.append(case.item_id)
            labelling.submit(ctx, case.assignment_id, reader, labels=["normal"])
        assert served == [i.item_id for i in head]
        # The service-path timing renders its own items only.
        times = bench.service_times(ctx, service)
        assert set(times) == {"CR", "CT"} and all(t["total_ms"] > 0 for t in times.values())
        assert [bench.derived_count(settings.store_dir, i.content_hash) for i in head] == [0] * 4
        assert all(bench.derived_count(settings.store_dir, i.content_hash) >= 2 for i in service)
    finally:
        ctx.close()


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists() and os.environ.get("CI") != "true",
                    reason="needs /usr/bin/chromium")
def test_run_reports_every_press_as_a_first_view(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "SERVICE_ITEMS_PER_KIND", 1)
    result = bench.run(presses=2, backlog=50, dwell=0.5)
    assert result["presses"] == 4 and result["uncached_at_start"] == result["real_items"] == 6
    assert [r["phase"] for r in result["presses_detail"]] == ["back_to_back"] * 2 + ["reading"] * 2
    assert {r["prepared"] for r in result["presses_detail"]} <= {"none", "partial", "ready"}
    assert result["p50_ms"] > 0 and result["p95_ms"] >= result["p50_ms"]
