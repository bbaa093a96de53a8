"""Reader studies: rounds over chosen items, intra-reader re-reads mixed into the queue after a
washout, and automation-bias rounds with two randomised arms."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from db.base import utcnow
from db.models import Annotation, AnnotationKind, ModelVersion, Prediction
from medlabel.errors import InputError, NotFoundError
from services import agreement_report, export, labelling, verification
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.services.factories import make_items, make_project, user_id
from tests.services.test_verification import _labelled_project


def _label_all(ctx: AppContext, pid: int, reader: str, label_of: Callable[[int], str]) -> list[int]:
    uid, done = user_id(ctx, reader), []
    while (case := labelling.next_case(ctx, pid, uid)) is not None:
        labelling.submit(ctx, case.assignment_id, uid, labels=[label_of(case.item_id)])
        done.append(case.item_id)
    return done


def test_round_over_chosen_items(ctx: AppContext) -> None:
    pid = _labelled_project(ctx)
    with ctx.reads() as session:
        ids = sorted(a.item_id for a in session.query(Annotation).all())
    rnd = verification.create_round(ctx, pid, name="Suspects", readers=["rad2", "rad3"], item_ids=ids[:3], actor=LOCAL_ADMIN)
    assert rnd.sample_size == 3 and rnd.reads_total == 6
    with pytest.raises(InputError, match="not labelled items"):
        verification.create_round(ctx, pid, name="Bad", readers=["rad2", "rad3"], item_ids=[ids[0], 99999], actor=LOCAL_ADMIN)
    unlabelled = make_items(ctx, pid, 1, start=500)
    with pytest.raises(InputError, match=str(unlabelled[0])):
        verification.create_round(ctx, pid, name="Bad", readers=["rad2", "rad3"], item_ids=unlabelled, actor=LOCAL_ADMIN)
    assert len(verification.rounds(ctx, pid, actor=LOCAL_ADMIN)) == 1  # the refused rounds left nothing behind


def test_rereads_wait_for_the_washout_and_mix_into_the_queue(ctx: AppContext) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2"))
    make_items(ctx, pid, 8)
    first = _label_all(ctx, pid, "rad1", lambda item: "pneumonia" if item % 2 else "normal")
    start = utcnow()
    study = verification.create_reread_round(ctx, pid, reader="rad1", n=4, washout_days=14, seed=3, spacing=2,
                                             now=start, actor=LOCAL_ADMIN)
    assert study.kind == "intra_reader" and study.reads_total == 4 and study.washout_until is not None
    make_items(ctx, pid, 6, start=100)
    rad1 = user_id(ctx, "rad1")

    # Inside the washout only new items are served.
    case = labelling.next_case(ctx, pid, rad1, now=start + dt.timedelta(days=13))
    assert case is not None and case.item_id not in first
    labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])

    # After the washout: one re-read after every two new labels, looking like any other case.
    served = []
    later = start + dt.timedelta(days=15)
    while (case := labelling.next_case(ctx, pid, rad1, now=later)) is not None:
        again = labelling.next_case(ctx, pid, rad1, now=later)
        assert again is not None and again.assignment_id == case.assignment_id  # a rerun resumes the same case
        is_reread = case.item_id in first
        if is_reread:
            assert case.suggestions == () and "re-read" not in case.suggestions_note.lower()
        served.append("R" if is_reread else "N")
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    # The first re-read comes as soon as the washout ends, then one after every two new labels; once no
    # new item is left the remaining re-reads follow.
    assert served == ["R", "N", "N", "R", "N", "N", "R", "N", "R"]

    report = verification.intra_reader_report(ctx, study.id, actor=LOCAL_ADMIN)
    assert report.n_pairs == 4 and report.reader == "rad1"
    expected = sum(p.first == "normal" for p in report.pairs) / 4
    assert report.percent_agreement == pytest.approx(expected)
    assert all(p.first == ("pneumonia" if p.item_id % 2 else "normal") for p in report.pairs)
    assert all(p.agree == (p.first == p.reread) for p in report.pairs)
    # Re-reads are not a second reader: agreement and the export only see one read per item.
    rows = {r["item_id"]: r for r in export.export_rows(ctx, pid, actor=LOCAL_ADMIN)}
    assert all(len(rows[p.item_id]["reader_labels"]) == 1 for p in report.pairs)
    records, _ = agreement_report.project_ratings(ctx, pid, actor=LOCAL_ADMIN)
    assert len(records) == len({item for item, _, _ in records})
    with ctx.reads() as session:
        kinds = {a.kind for a in session.query(Annotation).filter(Annotation.round_id == study.id)}
    assert kinds == {AnnotationKind.REREAD}


def test_intra_reader_kappa_and_refusals(ctx: AppContext) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2"))
    make_items(ctx, pid, 6)
    truth = {}
    first = _label_all(ctx, pid, "rad1", lambda item: truth.setdefault(item, "pneumonia" if item % 2 else "normal"))
    with pytest.raises(InputError, match="only 6"):
        verification.create_reread_round(ctx, pid, reader="rad1", n=7, washout_days=1, actor=LOCAL_ADMIN)
    with pytest.raises(InputError, match="no user"):
        verification.create_reread_round(ctx, pid, reader="ghost", n=2, washout_days=1, actor=LOCAL_ADMIN)
    study = verification.create_reread_round(ctx, pid, reader="rad1", n=6, washout_days=0, spacing=0, actor=LOCAL_ADMIN)
    empty = verification.intra_reader_report(ctx, study.id, actor=LOCAL_ADMIN)
    assert empty.kappa is None and empty.reason is not None and "fewer than two" in empty.reason
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=[truth[case.item_id]])  # perfectly consistent
    report = verification.intra_reader_report(ctx, study.id, actor=LOCAL_ADMIN)
    assert report.n_pairs == len(first) == 6
    assert report.percent_agreement == 1.0 and report.kappa == pytest.approx(1.0)
    with pytest.raises(NotFoundError):
        verification.automation_bias_report(ctx, study.id, actor=LOCAL_ADMIN)


def _predict(ctx: AppContext, item_ids: list[int], label: str) -> None:
    with ctx.sessions.begin() as session:
        model = ModelVersion(name="m", version=1, sha256="0" * 64, size_bytes=1, stored_path="x.onnx",
                             labels=["normal", "pneumonia"])
        session.add(model)
        session.flush()
        other = "normal" if label == "pneumonia" else "pneumonia"
        for item_id in item_ids:
            session.add(Prediction(item_id=item_id, model_id=model.id, probabilities={label: 0.9, other: 0.1}))


def test_automation_bias_arms(ctx: AppContext) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3", "rad4", "rad5"))
    items = make_items(ctx, pid, 6)
    _label_all(ctx, pid, "rad1", lambda item: "normal")
    _predict(ctx, items, "pneumonia")  # the model disagrees with the reference on every item
    rnd = verification.create_round(ctx, pid, name="AB", readers=["rad2", "rad3", "rad4", "rad5"],
                                    readers_per_item=2, n=6, seed=5, kind="automation_bias", actor=LOCAL_ADMIN)
    arms = dict(rnd.arms)
    assert sorted(arms.values()) == ["blinded", "blinded", "suggestions", "suggestions"]
    assert arms == dict(verification.create_round(ctx, pid, name="AB2", readers=["rad2", "rad3", "rad4", "rad5"],
                                                  readers_per_item=2, n=6, seed=5, kind="automation_bias", actor=LOCAL_ADMIN).arms)
    ab2 = verification.rounds(ctx, pid, actor=LOCAL_ADMIN)[-1]
    verification.close_round(ctx, ab2.id, actor=LOCAL_ADMIN)
    for reader, arm in arms.items():
        uid = user_id(ctx, reader)
        while (case := verification.next_verification(ctx, uid)) is not None:
            if arm == "suggestions":
                assert [s.label for s in case.suggestions][0] == "pneumonia"
                label = "pneumonia"  # swayed by the suggestion
            else:
                assert case.suggestions == () and "Blinded" in case.suggestions_note
                label = "normal"
            verification.submit_verification(ctx, case.assignment_id, uid, labels=[label])
    report = verification.automation_bias_report(ctx, rnd.id, actor=LOCAL_ADMIN)
    with_s, blind = report.arms["suggestions"], report.arms["blinded"]
    assert with_s.reads == blind.reads == 6  # every item read once in each arm
    assert with_s.model.percent == 1.0 and blind.model.percent == 0.0
    assert with_s.reference.percent == 0.0 and blind.reference.percent == 1.0
    assert report.model_agreement_difference == 1.0
    assert blind.reference.percent_ci is not None
    lo, hi = blind.reference.percent_ci
    assert 0 < lo < 1.0 <= hi + 1e-12
    with pytest.raises(NotFoundError):
        verification.intra_reader_report(ctx, rnd.id, actor=LOCAL_ADMIN)
