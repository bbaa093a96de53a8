"""The one project picker: choosing any project on any page works (no StreamlitDuplicateElementId), the
choice is remembered across pages and sign-ins, and pages that need data open on a project that has some."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.models import Item, ModelVersion, Prediction
from db.queries.projects import project_ids_with
from medlabel.settings import Settings
from services import accounts, labelling, review
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.preferences import last_project, project_choice, remember_project
from tests.portal.conftest import PASSWORD, signed_in
from tests.services.factories import PASSWORD as FACTORY_PASSWORD
from tests.services.factories import add_lead, make_items, make_project, user_id


def _two_projects(ctx: AppContext) -> tuple[int, int]:
    first = make_project(ctx, "Alpha")
    second = make_project(ctx, "Beta")
    make_items(ctx, first, 2)
    make_items(ctx, second, 3)
    return first, second


def _label_all(ctx: AppContext, project_id: int, username: str, label: str = "normal") -> None:
    uid = user_id(ctx, username)
    while (case := labelling.next_case(ctx, project_id, uid)) is not None:
        labelling.submit(ctx, case.assignment_id, uid, labels=[label])


def test_history_second_project_does_not_crash_and_amends(ctx: AppContext, portal_env: Settings) -> None:
    _, second = _two_projects(ctx)
    _label_all(ctx, second, "rad1")
    at = signed_in("rad1", FACTORY_PASSWORD)
    at.switch_page("views/history.py").run()
    assert not at.exception
    at.selectbox(key="history_project").set_value("Beta").run()
    assert not at.exception, at.exception
    assert len(at.dataframe[0].value) == 3
    at.selectbox(key="history_project").set_value("Alpha").run()
    assert not at.exception and len(at.dataframe[0].value) == 0


def test_projects_edit_second_project_does_not_crash(ctx: AppContext, portal_env: Settings) -> None:
    _two_projects(ctx)
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Alpha", "Beta")
    at = signed_in("lead1")
    at.switch_page("views/projects.py").run()
    at.selectbox(key="edit_project").set_value("Beta").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="edit_project").value == "Beta"


def test_review_second_item_does_not_crash(ctx: AppContext, portal_env: Settings) -> None:
    from db.models import DeidStatus

    project = make_project(ctx, "Alpha")
    ids = make_items(ctx, project, 2, status=DeidStatus.QUARANTINED)
    accounts.add_user(ctx, "admin1", PASSWORD, "admin")
    assert [i.item_id for i in review.review_queue(ctx, actor=LOCAL_ADMIN)] == ids
    at = signed_in("admin1")
    at.switch_page("views/review.py").run()
    at.selectbox(key="review_item").set_value(ids[1]).run()
    assert not at.exception, at.exception
    assert at.selectbox(key="review_item").value == ids[1]


def test_choice_is_remembered_across_pages_and_sign_ins(ctx: AppContext, portal_env: Settings) -> None:
    _, second = _two_projects(ctx)
    accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Alpha", "Beta")
    at = signed_in("lead1")
    at.switch_page("views/rounds.py").run()
    assert at.selectbox(key="rounds_project").value == "Alpha"
    at.selectbox(key="rounds_project").set_value("Beta").run()
    assert last_project(ctx, user_id(ctx, "lead1")) == second
    at.switch_page("views/ingest.py").run()
    assert at.selectbox(key="ingest_project").value == "Beta"
    again = signed_in("lead1")  # a new session
    again.switch_page("views/projects.py").run()
    assert again.selectbox(key="edit_project").value == "Beta"


def test_pages_that_need_data_prefer_a_project_with_data(ctx: AppContext, portal_env: Settings) -> None:
    first, second = _two_projects(ctx)  # Alpha (first by name) has no labels, Beta has
    _label_all(ctx, second, "rad1")
    lead = accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Alpha", "Beta")  # a project without a lead is for administrators only
    choice = project_choice(ctx, lead.id, "lead", "labels")
    assert choice.projects[choice.default].name == "Beta" and choice.without_data == {"Alpha"}
    at = signed_in("lead1")
    at.switch_page("views/projects.py").run()
    assert at.selectbox(key="export_project").value == "Beta"
    assert "no labels yet" in at.selectbox(key="export_project").format_func("Alpha")
    # a remembered project that has data wins; one without data does not
    remember_project(ctx, lead.id, first)
    assert project_choice(ctx, lead.id, "lead", "labels").default == 1
    assert project_choice(ctx, lead.id, "lead").default == 0
    with pytest.raises(ValueError):
        project_choice(ctx, lead.id, "lead", "nonsense")


def test_a_project_remembered_by_name_before_ids_is_still_opened_on(ctx: AppContext) -> None:
    """Preferences written before projects were remembered by id hold the name: still honoured, until the
    user picks again (then the id wins)."""
    from db.queries import preferences as preferences_q
    from services.preferences import LEGACY_LAST_PROJECT

    first, second = _two_projects(ctx)
    lead = accounts.add_user(ctx, "lead1", PASSWORD, "lead")
    add_lead(ctx, "lead1", "Alpha", "Beta")
    assert last_project(ctx, lead.id) is None and project_choice(ctx, lead.id, "lead").default == 0
    with ctx.sessions.begin() as session:
        preferences_q.set_preference(session, lead.id, LEGACY_LAST_PROJECT, "Beta")
    assert last_project(ctx, lead.id) == second and project_choice(ctx, lead.id, "lead").default == 1
    remember_project(ctx, lead.id, first)
    assert last_project(ctx, lead.id) == first and project_choice(ctx, lead.id, "lead").default == 0


def test_readers_see_only_their_projects(ctx: AppContext, portal_env: Settings) -> None:
    make_project(ctx, "Alpha", readers=("rad1",))
    make_project(ctx, "Beta", readers=("rad2",))
    choice = project_choice(ctx, user_id(ctx, "rad1"), "reader")
    assert [p.name for p in choice.projects] == ["Alpha"]


def test_a_project_whose_items_a_model_predicted_is_not_marked_without_a_model(ctx: AppContext) -> None:
    """The Active learning page shows the newest active model that predicted the project; the picker must
    not call that project "no model yet" (found in the demo: ChestX-ray14 with clinical data)."""
    first, second = _two_projects(ctx)
    with ctx.sessions.begin() as session:
        model = ModelVersion(name="m", version=1, sha256="0" * 64, size_bytes=1, stored_path="m.onnx",
                             labels=["normal", "pneumonia"])
        session.add(model)
        session.flush()
        item_id = session.scalars(select(Item.id).where(Item.project_id == second)).first()
        session.add(Prediction(item_id=item_id, model_id=model.id, probabilities={"normal": 0.4, "pneumonia": 0.6}))
    with ctx.reads() as session:
        assert project_ids_with(session, "active_learning") == {second}
    with ctx.sessions.begin() as session:
        session.get(ModelVersion, model.id).is_active = False  # a retired model is not the page's model
    with ctx.reads() as session:
        assert project_ids_with(session, "active_learning") == set()
