"""Authorization in the services (issue 14, item 4): the role tables of docs/security.md, walked.

Every row of the service table is called as each of seven actors; a "no" must raise PermissionDenied,
a "yes" must not (it may fail for another reason: these calls use a minimal world). The CLI table is
run with ``medlabel --as USER``. Before services/authz.py, a reader could call e.g.
``export_project`` or ``verification.rounds`` on a project they do not belong to, and a lead could
touch every project: the "no" cells of those rows failed.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from db.models import (
    ActiveLearningRound,
    DeidStatus,
    Job,
    JobState,
    ModelVersion,
    RoundKind,
    SecondOpinionRequest,
    VerificationRound,
)
from medlabel.errors import MedlabelError, PermissionDenied
from medlabel.settings import Settings
from services import accounts, audit, images
from services.context import AppContext
from services.projects import LabelSpec, ProjectSpec, create_project
from services.projects import project_id as pid_of
from tests.services.factories import PASSWORD, make_items

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"
ACTORS = ("admin", "lead", "lead elsewhere", "reader", "reader elsewhere", "clinician", "other clinician")
USERS = {"admin": ("boss", "admin"), "lead": ("lead1", "lead"), "lead elsewhere": ("lead2", "lead"),
         "reader": ("rad1", "reader"), "reader elsewhere": ("rad2", "reader"), "clinician": ("doc", "clinician"),
         "other clinician": ("doc2", "clinician")}


def doc_table(marker: str) -> dict[str, dict[str, bool]]:
    """The table after ``<!-- marker -->`` in docs/security.md: row name -> column -> allowed."""
    lines = DOCS.read_text().split(f"<!-- {marker} -->", 1)[1].strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows: dict[str, dict[str, bool]] = {}
    for line in lines[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        assert all(c in ("yes", "no") for c in cells[1:]), line
        rows[cells[0]] = {h: c == "yes" for h, c in zip(header[1:], cells[1:], strict=True)}
    return rows


@dataclass
class World:
    ctx: AppContext
    ids: dict[str, int]  # actor -> user id
    alpha: int
    beta: int
    item: int
    beta_item: int
    quarantined: int
    round_id: int
    al_round: int
    job: int
    request: int


def build_world(ctx: AppContext) -> World:
    ids = {actor: accounts.add_user(ctx, name, PASSWORD, role).id for actor, (name, role) in USERS.items()}
    labels = (LabelSpec("normal", "1"), LabelSpec("pneumonia", "2"))
    # lead1 leads Alpha (a member), lead2 leads Beta; Alpha takes second opinions, Beta does not
    alpha = create_project(ctx, ProjectSpec(name="Alpha", task_type="single_label", labels=labels,
                                            readers=("rad1", "lead1"), second_opinion=True,
                                            allow_reidentification=True))
    beta = create_project(ctx, ProjectSpec(name="Beta", task_type="single_label", labels=labels,
                                           readers=("rad2", "lead2")))
    item, _ = make_items(ctx, alpha, 2)
    (beta_item,) = make_items(ctx, beta, 1, start=50)
    (quarantined,) = make_items(ctx, alpha, 1, status=DeidStatus.QUARANTINED, start=100)
    with ctx.sessions.begin() as session:
        model = ModelVersion(name="m", version=1, sha256="0" * 64, size_bytes=1, stored_path="none", labels=["x"],
                             is_active=False)
        session.add(model)
        session.flush()
        rnd = VerificationRound(project_id=alpha, name="R", kind=RoundKind.INTER_READER, seed=0, sample_size=0)
        al_round = ActiveLearningRound(project_id=alpha, model_id=model.id, strategy="margin", batch_size=5,
                                       n_labels=0, state="held")
        job = Job(kind="export", params={"project_id": alpha, "format": "csv", "seed": 0},
                  state=JobState.SUCCEEDED, attempts=1, project_id=alpha, created_by_id=ids["lead"])
        request = SecondOpinionRequest(user_id=ids["clinician"], model_id=model.id, image_state="lost")
        session.add_all([rnd, al_round, job, request])
        session.flush()
        return World(ctx, ids, alpha, beta, item, beta_item, quarantined, rnd.id, al_round.id, job.id, request.id)


def _calls() -> dict[str, Callable[[World, int], Any]]:
    from services import (
        agreement_report,
        cases,
        export,
        ingest,
        jobs,
        labelling,
        learning,
        models,
        projects,
        review,
        second_opinion,
        verification,
    )
    from services.models import cards as model_cards

    al = learning
    return {
        "projects.get_project": lambda w, a: projects.get_project(w.ctx, w.alpha, actor=a),
        "projects.update_project": lambda w, a: projects.update_project(
            w.ctx, w.alpha, projects.ProjectChanges(description="changed"), actor=a),
        "labelling.next_case": lambda w, a: labelling.next_case(w.ctx, w.alpha, a),
        "labelling.queue_progress": lambda w, a: labelling.queue_progress(w.ctx, w.alpha, a),
        "labelling.undo_last": lambda w, a: labelling.undo_last(w.ctx, w.alpha, a),
        "labelling.history": lambda w, a: labelling.history(w.ctx, w.alpha, a),
        "labelling.upcoming_item": lambda w, a: labelling.upcoming_item(w.ctx, w.alpha, a),
        "images.display_image": lambda w, a: images.display_image(w.ctx, w.item, actor=a),
        "images.window_choices": lambda w, a: images.window_choices(w.ctx, w.item, actor=a),
        "cases.case_detail": lambda w, a: cases.case_detail(w.ctx, w.item, actor=a),
        "models.item_predictions": lambda w, a: models.item_predictions(w.ctx, w.item, actor=a),
        "models.tabular_contribution": lambda w, a: models.tabular_contribution(w.ctx, "no-such-model", w.alpha, actor=a),
        "models.compare_variants": lambda w, a: models.compare_variants(w.ctx, "no-such-model", w.alpha, actor=a),
        "models.preview": lambda w, a: model_cards.preview(w.ctx, "no-such-model", w.alpha, actor=a),
        "models.approve": lambda w, a: model_cards.approve(w.ctx, "no-such-model", a, project_id=w.alpha),
        "export.export_rows": lambda w, a: export.export_rows(w.ctx, w.alpha, actor=a),
        "export.export_project": lambda w, a: export.export_project(w.ctx, w.alpha, "csv", actor=a),
        "ingest.ingest_uploads": lambda w, a: ingest.ingest_uploads(w.ctx, w.alpha, [], actor=a),
        "ingest.ingest_paths": lambda w, a: ingest.ingest_paths(w.ctx, w.alpha, [], actor=a),
        "ingest.ingest_blobs": lambda w, a: ingest.ingest_blobs(w.ctx, w.alpha, [], actor=a),
        "ingest.ingest_chunk": lambda w, a: ingest.ingest_chunk(w.ctx, [], should_stop=lambda: False, project_id=w.alpha,
                                                                options={}, actor_id=a),
        "ingest.reidentify": lambda w, a: ingest.reidentify(w.ctx, w.alpha, "P1", actor=a),
        "review.review_queue": lambda w, a: review.review_queue(w.ctx, actor=a),
        "review.review_image": lambda w, a: review.review_image(w.ctx, w.quarantined, [], actor=a),
        "review.release": lambda w, a: review.release(w.ctx, w.quarantined, [], actor=a),
        "review.reject": lambda w, a: review.reject(w.ctx, w.quarantined, "unsure", actor=a),
        "verification.create_round": lambda w, a: verification.create_round(
            w.ctx, w.alpha, name="R2", readers=["rad1"], n=1, actor=a),
        "verification.check_round": lambda w, a: verification.check_round(w.ctx, w.alpha, readers=["rad1"], n=1,
                                                                           actor=a),
        "verification.create_reread_round": lambda w, a: verification.create_reread_round(
            w.ctx, w.alpha, reader="rad1", n=2, washout_days=1, actor=a),
        "verification.rounds": lambda w, a: verification.rounds(w.ctx, w.alpha, actor=a),
        "verification.round_summary": lambda w, a: verification.round_summary(w.ctx, w.round_id, actor=a),
        "verification.round_ratings": lambda w, a: verification.round_ratings(w.ctx, w.round_id, actor=a),
        "verification.close_round": lambda w, a: verification.close_round(w.ctx, w.round_id, actor=a),
        "verification.intra_reader_report": lambda w, a: verification.intra_reader_report(w.ctx, w.round_id, actor=a),
        "verification.automation_bias_report": lambda w, a: verification.automation_bias_report(
            w.ctx, w.round_id, actor=a),
        "agreement_report.project_ratings": lambda w, a: agreement_report.project_ratings(w.ctx, w.alpha, actor=a),
        "agreement_report.agreement_for_project": lambda w, a: agreement_report.agreement_for_project(
            w.ctx, w.alpha, n_boot=0, actor=a),
        "agreement_report.readers_vs_reference": lambda w, a: agreement_report.readers_vs_reference(
            w.ctx, w.alpha, actor=a),
        "agreement_report.agreement_over_rounds": lambda w, a: agreement_report.agreement_over_rounds(
            w.ctx, w.alpha, n_boot=0, actor=a),
        "learning.status": lambda w, a: al.status(w.ctx, pid_of(w.ctx, "Alpha"), actor=a),
        "learning.configure": lambda w, a: al.configure(w.ctx, pid_of(w.ctx, "Alpha"), "random", 5, 0, actor=a),
        "learning.queued_cases": lambda w, a: al.queued_cases(w.ctx, pid_of(w.ctx, "Alpha"), actor=a),
        "learning.learning_curve": lambda w, a: al.learning_curve(w.ctx, pid_of(w.ctx, "Alpha"), actor=a),
        "learning.predictions_vs_truth": lambda w, a: al.predictions_vs_truth(w.ctx, pid_of(w.ctx, "Alpha"), actor=a),
        "learning.suspected_label_errors": lambda w, a: al.suspected_label_errors(w.ctx, pid_of(w.ctx, "Alpha"), actor=a),
        "verification.send_to_verification": lambda w, a: verification.send_to_verification(
            w.ctx, w.alpha, [w.item], ["rad1"], a),
        "learning.decide": lambda w, a: al.decide(w.ctx, w.al_round, "reject", a),
        # an unknown kind: an allowed actor passes the check and is refused for the kind, so nothing starts
        "jobs.submit": lambda w, a: jobs.submit(w.ctx, "no-such-kind", {"project": "Alpha"}, a),
        "jobs.job": lambda w, a: jobs.job(w.ctx, w.job, actor=a),
        "jobs.cancel": lambda w, a: jobs.cancel(w.ctx, w.job, a),
        "jobs.retry": lambda w, a: jobs.retry(w.ctx, w.job, a),  # succeeded: an allowed actor gets a conflict
        "jobs.list_jobs": lambda w, a: jobs.list_jobs(w.ctx, actor=a),
        "second_opinion.get": lambda w, a: second_opinion.get(w.ctx, w.request, actor=a),
        "second_opinion.wait_for_image": lambda w, a: second_opinion.wait_for_image(w.ctx, w.request, actor=a,
                                                                                    timeout=0.01),
        "second_opinion.display_png": lambda w, a: second_opinion.display_png(w.ctx, w.request, actor=a),
        "second_opinion.heatmap": lambda w, a: second_opinion.heatmap(w.ctx, w.request, actor=a),
        "second_opinion.heatmap_details": lambda w, a: second_opinion.heatmap_details(w.ctx, w.request, actor=a),
        "second_opinion.neighbours": lambda w, a: second_opinion.neighbours(w.ctx, w.request, actor=a),
        "second_opinion.request_review": lambda w, a: second_opinion.request_review(w.ctx, w.request, w.alpha, a),
        "second_opinion.request_review into a project that takes no second opinions":
            lambda w, a: second_opinion.request_review(w.ctx, w.request, w.beta, a),
    }


SERVICE_TABLE = doc_table("authz-services")


def test_the_table_lists_every_checked_entry_point() -> None:
    """Each row has a call and each call a row; every public service function taking a project, item,
    round, job or request is in the table or named in the security doc's list of self-checking ones."""
    assert set(SERVICE_TABLE) == set(_calls())
    import importlib
    import pkgutil

    import services

    text = DOCS.read_text()  # the unchecked ones are named there with the reason
    ids = re.compile(r"^(project_name|project_id|item_id|round_id|job_id|request_id|assignment_id|annotation_id)$")
    missing = []
    for info in pkgutil.walk_packages(services.__path__, "services."):
        module = importlib.import_module(info.name)
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_"):
                continue
            params = inspect.signature(fn).parameters
            if not any(ids.match(p) for p in params) or "ctx" not in params:
                continue
            short = f"{info.name.split('.')[1]}.{name}"  # the package: services.jobs.api.submit -> jobs.submit
            if short not in SERVICE_TABLE and short not in UNCHECKED:
                missing.append(short)
    assert missing == []
    assert [name for name in sorted(UNCHECKED) if f"{name.split('.')[1]}`" not in text] == []


# Entry points that take an id and check no access themselves, each with its reason in docs/security.md.
UNCHECKED = {
    "labelling.submit", "labelling.skip", "labelling.amend", "verification.submit_verification",
    "verification.next_verification", "verification.adjudicate",  # the caller's own claim or annotation
    "models.prelabel", "models.prelabel_pending", "learning.retrain", "learning.score_pool",
    "learning.learn_project_features", "models.evaluate", "models.quantize", "models.prelabel_chunk",
    "learning.setup_active_learning_demo", "demo.demo_reads",  # jobs, CLI
    "demo_clinical.load_clinical_demo",  # `medlabel demo`, as the local administrator
    "learning.maybe_retrain", "learning.retrain_if_due", "learning.queue_reason",
    "jobs.submit_unchecked", "jobs.list_jobs_unchecked",  # system work after a reader's label; next_case checked
    "jobs.wait", "jobs.stop_requested", "jobs.launch",  # the CLI's --wait, the worker, submit's and retry's launch
    "jobs.check_submitter",  # the worker's check of a job's submitter (the check itself)
    "images.record_view",  # called by display_image after its check
    "images.prefetch_display",  # warms the cache for the item upcoming_item (checked) names; returns nothing
    "preferences.remember_project", "projects.project_name",  # the user's own preference; a name look-up
    "authz.require_item", "authz.require_job", "authz.require_request", "authz.require_round",  # the checks
}


@pytest.mark.parametrize("entry", sorted(SERVICE_TABLE))
def test_service_entry_point_refuses_whom_the_table_refuses(ctx: AppContext, entry: str) -> None:
    world = build_world(ctx)
    call = _calls()[entry]
    wrong = []
    for actor in ACTORS:
        allowed = SERVICE_TABLE[entry][actor]
        try:
            call(world, world.ids[actor])
        except PermissionDenied as exc:
            if allowed:
                wrong.append(f"{actor} refused: {exc}")
            else:
                assert "\n" not in str(exc) and len(str(exc)) < 200  # one line
        except MedlabelError:
            if not allowed:
                wrong.append(f"{actor} not refused (another error first)")
        else:
            if not allowed:
                wrong.append(f"{actor} not refused")
    assert wrong == [], wrong


def test_lists_leave_out_what_the_actor_may_not_touch(ctx: AppContext) -> None:
    from services import jobs, review
    from services.preferences import project_choice
    from services.projects import projects_for

    w = build_world(ctx)
    (beta_quarantined,) = make_items(ctx, w.beta, 1, status=DeidStatus.QUARANTINED, start=200)
    assert [r.item_id for r in review.review_queue(ctx, actor=w.ids["lead elsewhere"])] == [beta_quarantined]
    assert {r.item_id for r in review.review_queue(ctx, actor=w.ids["admin"])} == {w.quarantined, beta_quarantined}
    assert [j.id for j in jobs.list_jobs(ctx, actor=w.ids["lead"])] == [w.job]
    assert jobs.list_jobs(ctx, actor=w.ids["lead elsewhere"]) == []
    assert [p.name for p in projects_for(ctx, w.ids["lead elsewhere"], "lead")] == ["Beta"]
    assert [p.name for p in projects_for(ctx, w.ids["reader"], "reader")] == ["Alpha"]
    assert [p.name for p in projects_for(ctx, w.ids["admin"], "admin")] == ["Alpha", "Beta"]
    assert projects_for(ctx, w.ids["clinician"], "clinician") == []
    # the caller's claimed role does not count: the database's does
    assert [p.name for p in projects_for(ctx, w.ids["reader"], "admin")] == ["Alpha"]
    assert [p.name for p in project_choice(ctx, w.ids["lead"], "lead").projects] == ["Alpha"]


def test_a_project_without_a_lead_is_for_administrators_only(ctx: AppContext) -> None:
    """A project no lead leads (created by an administrator or the CLI, no lead among its members) is
    not open to every lead: lead actions are the administrators' until one names a lead; its readers
    still read it. Before, ``may_touch`` let any lead touch it."""
    from services import export, labelling, projects

    w = build_world(ctx)
    gamma = create_project(ctx, ProjectSpec(name="Gamma", task_type="single_label", labels=(LabelSpec("a", "1"),),
                                            readers=("rad1",)))
    for lead in ("lead", "lead elsewhere"):
        with pytest.raises(PermissionDenied, match="has no access to project 'Gamma'"):
            export.export_rows(ctx, gamma, actor=w.ids[lead])
        with pytest.raises(PermissionDenied):
            projects.update_project(ctx, projects.project_id(ctx, "Gamma"), projects.ProjectChanges(description="x"), actor=w.ids[lead])
        assert "Gamma" not in [p.name for p in projects.projects_for(ctx, w.ids[lead], "lead")]
    export.export_rows(ctx, gamma, actor=w.ids["admin"])
    labelling.history(ctx, gamma, w.ids["reader"])  # its reader still reads it
    assert "Gamma" in [p.name for p in projects.projects_for(ctx, w.ids["reader"], "reader")]
    with pytest.raises(PermissionDenied):
        export.export_rows(ctx, gamma, actor=w.ids["reader elsewhere"])
    # an administrator names a lead: that lead, and only that one, leads it
    projects.update_project(ctx, projects.project_id(ctx, "Gamma"), projects.ProjectChanges(readers=("rad1", "lead2")), actor=w.ids["admin"])
    export.export_rows(ctx, gamma, actor=w.ids["lead elsewhere"])
    with pytest.raises(PermissionDenied):
        export.export_rows(ctx, gamma, actor=w.ids["lead"])


def test_a_disabled_account_and_a_role_change_count_at_once(ctx: AppContext) -> None:
    from services import export, labelling

    w = build_world(ctx)
    export.export_rows(ctx, w.alpha, actor=w.ids["lead"])
    accounts.set_role(ctx, "lead1", "reader")  # still a member of Alpha, but no longer a lead
    with pytest.raises(PermissionDenied, match=r"lead1 \(reader\) may not"):
        export.export_rows(ctx, w.alpha, actor=w.ids["lead"])
    accounts.set_active(ctx, "lead1", False)
    with pytest.raises(PermissionDenied, match="disabled"):
        labelling.history(ctx, w.alpha, w.ids["lead"])


def test_image_views_are_audited_once_per_user_and_item(ctx: AppContext) -> None:
    from db.models import AuditEvent

    w = build_world(ctx)
    for zoom in (1.0, 2.0, 4.0):  # zooming re-renders: the same view
        images.display_image(ctx, w.item, actor=w.ids["reader"], zoom=zoom)
    images.display_image(ctx, w.item, actor=w.ids["lead"])
    with pytest.raises(PermissionDenied):
        images.display_image(ctx, w.beta_item, actor=w.ids["reader"])
    with pytest.raises(PermissionDenied, match="not released"):
        images.display_image(ctx, w.quarantined, actor=w.ids["reader"])
    with ctx.reads() as session:
        views = [(e.actor_id, e.target_type, e.target_id) for e in session.query(AuditEvent)
                 .filter(AuditEvent.action == "image.view").order_by(AuditEvent.id)]
    assert views == [(w.ids["reader"], "item", str(w.item)), (w.ids["lead"], "item", str(w.item))]
    assert audit.verify(ctx).broken_at is None


def test_expert_review_and_similar_cases_only_from_projects_that_take_second_opinions(ctx: AppContext) -> None:
    from services import second_opinion

    w = build_world(ctx)
    assert second_opinion.review_projects(ctx) == ["Alpha"]
    with pytest.raises(PermissionDenied, match="does not take second-opinion images"):
        second_opinion.request_review(ctx, w.request, w.beta, w.ids["clinician"])


# --- the CLI ----------------------------------------------------------------------------------------

CLI_TABLE = doc_table("authz-cli")


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MEDLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MEDLABEL_SECRET_KEY_FILE", str(settings.secret_key_file))
    return settings


def _run_cli(argv: list[str]) -> tuple[int, str]:
    from medlabel.cli import main

    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0), ""
    return 0, ""


@pytest.mark.parametrize("command", sorted(CLI_TABLE))
def test_cli_command_refuses_whom_the_table_refuses(ctx: AppContext, cli_env: Settings, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str], command: str) -> None:
    from tests.services.factories import _png

    w = build_world(ctx)
    upload = tmp_path / "film.png"
    upload.write_bytes(_png(7, 1, 32, 32))
    argv = command.replace("JOB", str(w.job)).replace("FILE", str(upload)).split()
    wrong = []
    for actor in ACTORS:
        allowed = CLI_TABLE[command][actor]
        capsys.readouterr()
        code, _ = _run_cli(["--as", USERS[actor][0], *argv])
        err = capsys.readouterr().err
        refused = code == 1 and re.search(r"^error: .*(may not|has no access|local administrator only)", err, re.M)
        if allowed and refused:
            wrong.append(f"{actor} refused: {err.strip()}")
        if not allowed and not refused:
            wrong.append(f"{actor} not refused (exit {code}): {err.strip()[:200]}")
        if refused:
            assert len(err.strip().splitlines()) == 1, err  # one line, no traceback
    assert wrong == [], wrong


def test_the_cli_without_as_is_the_local_administrator(ctx: AppContext, cli_env: Settings,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    build_world(ctx)
    assert _run_cli(["export", "Beta"])[0] == 0
    assert "item_id" in capsys.readouterr().out
    code, _ = _run_cli(["--as", "nobody", "export", "Beta"])
    assert code == 1 and "--as nobody: unknown or disabled account" in capsys.readouterr().err
