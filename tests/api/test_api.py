"""The HTTP API against a real server process on loopback (SQLite and PostgreSQL): every endpoint's
happy path, the token, scope and role refusals, hostile uploads, size and rate limits, and that a
prediction made through the API is the portal's second opinion (history, audit)."""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from sqlalchemy import func, select

import inference
from db.models import Annotation, AnnotationKind, ApiToken, AuditEvent, SecondOpinionRequest
from inference.postprocess import probabilities_for
from services import accounts, second_opinion
from services.agreement_report import agreement_for_project
from services.authz import LOCAL_ADMIN
from services.export import export_project
from tests.api.conftest import LABELS, MAX_UPLOAD_MB, PASSWORD, RATE_PER_MINUTE, Api, xray_png
from tests.services.factories import add_lead, make_items, make_project

pytestmark = pytest.mark.slow


def _error(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]


def _predict(client: httpx.Client, model: str, data: bytes, name: str = "scan.png", **form: str) -> httpx.Response:
    return client.post("/predictions", files={"file": (name, data, "application/octet-stream")},
                       data={"model": model, **form})


def _requests(api: Api) -> int:
    with api.ctx.reads() as session:
        return int(session.scalar(select(func.count()).select_from(SecondOpinionRequest)) or 0)


# --- health, schema, docs -----------------------------------------------------------------------


def test_health_and_openapi_need_no_token(api: Api) -> None:
    with api.client() as client:
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        schema = client.get("/openapi.json").json()
        assert {"/api/v1/predictions", "/api/v1/models", "/api/v1/projects/{project_id}/items"} <= set(schema["paths"])
        docs = client.get("/docs")
        assert "text/html" in docs.headers["content-type"] and "cdn." not in docs.text  # works offline
        assert client.get("/docs-static/swagger-ui-bundle.js").status_code == 200
        missing = client.get("/no-such-thing")
        assert missing.status_code == 404 and _error(missing)["code"] == "not_found"


def test_the_production_proxy_serves_the_api_under_api(api: Api, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import time

    import httpx

    from tests.browser.conftest import free_port
    from tests.test_deploy import NGINX, loopback_nginx_config

    if NGINX is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but nginx is missing (make test installs nginx-light)")
        pytest.skip("nginx not installed (apt-get install nginx-light)")
    port = free_port()
    main = loopback_nginx_config(tmp_path, port, (free_port(), free_port()), api=int(api.url.rsplit(":", 1)[1]))
    proc = subprocess.Popen([NGINX, "-c", str(main), "-e", str(tmp_path / "error.log"), "-g", "daemon off;"],
                            start_new_session=True)
    try:
        deadline, response = time.monotonic() + 20, None
        while time.monotonic() < deadline:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert response is not None and response.status_code == 200 and response.json()["status"] == "ok"
        refused = httpx.get(f"http://127.0.0.1:{port}/api/v1/models", timeout=5)
        assert refused.status_code == 401 and _error(refused)["code"] == "unauthorized"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)


# --- tokens -------------------------------------------------------------------------------------


def test_missing_invalid_revoked_and_expired_tokens_are_refused(api: Api) -> None:
    _, doc = api.user("clinician")
    with api.client() as client:
        response = client.get("/models")
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert _error(response)["code"] == "unauthorized"
    with api.client("mlt_not-a-real-token") as client:
        assert client.get("/models").status_code == 401
    token_id, secret = api.token(doc, "read")
    with api.client(secret) as client:
        assert client.get("/models").status_code == 200
        api_tokens_revoke(api, token_id)
        revoked = client.get("/models")
        assert revoked.status_code == 401 and "revoked" in _error(revoked)["message"]
    expired_id, expired = api.token(doc, "read", days=1)
    with api.ctx.sessions.begin() as session:
        session.get(ApiToken, expired_id).expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    with api.client(expired) as client:
        response = client.get("/models")
        assert response.status_code == 401 and "expired" in _error(response)["message"]
        assert secret not in response.text and expired not in response.text


def test_refused_tokens_are_audited_without_the_token(api: Api) -> None:
    doc_id, doc = api.user("clinician")
    with api.ctx.reads() as session:
        before = int(session.scalar(select(func.max(AuditEvent.id))) or 0)
    unknown = "mlt_" + "x" * 43
    with api.client(unknown) as client:
        assert client.get("/models").status_code == 401
    with api.client() as client:
        assert client.get("/predictions").status_code == 401
    token_id, secret = api.token(doc, "read")
    api_tokens_revoke(api, token_id)
    with api.client(secret) as client:
        assert client.get("/models/cxr-tiny").status_code == 401
    with api.ctx.reads() as session:
        refused = session.scalars(select(AuditEvent).where(AuditEvent.action == "api.refused",
                                                           AuditEvent.id > before).order_by(AuditEvent.id)).all()
    assert [(e.actor_id, e.target_type, e.target_id) for e in refused] == [
        (None, None, None), (None, None, None), (doc_id, "api_token", str(token_id))]
    assert [(e.payload["route"], e.payload["status"]) for e in refused] == [
        ("/api/v1/models", 401), ("/api/v1/predictions", 401), ("/api/v1/models/{name}", 401)]
    assert "revoked" in refused[2].payload["reason"] and "required" in refused[1].payload["reason"]
    stored = json.dumps([e.payload for e in refused])
    assert unknown not in stored and secret not in stored and secret[4:16] not in stored


def test_last_use_is_written_at_most_once_a_minute(api: Api) -> None:
    _, doc = api.user("clinician")
    token_id, secret = api.token(doc, "read")

    def last_use() -> dt.datetime | None:
        with api.ctx.reads() as session:
            return session.get(ApiToken, token_id).last_used_at

    def calls() -> int:
        with api.ctx.reads() as session:
            return int(session.scalar(select(func.count()).select_from(AuditEvent).where(
                AuditEvent.action == "api.call", AuditEvent.target_id == str(token_id))) or 0)

    with api.client(secret) as client:
        assert last_use() is None
        assert client.get("/models").status_code == 200
        first = last_use()
        assert first is not None
        assert client.get("/models").status_code == 200
        assert last_use() == first  # within the minute: no second write
        with api.ctx.sessions.begin() as session:
            session.get(ApiToken, token_id).last_used_at = first - dt.timedelta(minutes=2)
        assert client.get("/models").status_code == 200
        used = last_use()
        assert used is not None and used > first - dt.timedelta(minutes=2)
    assert calls() == 3  # every call is audited all the same


def api_tokens_revoke(api: Api, token_id: int) -> None:
    from services.api_tokens import revoke_token

    revoke_token(api.ctx, token_id)


def test_a_disabled_users_tokens_stop_at_once(api: Api) -> None:
    _, doc = api.user("clinician")
    _, secret = api.token(doc, "predict", "read")
    with api.client(secret) as client:
        assert client.get("/predictions").status_code == 200
        accounts.set_active(api.ctx, doc, False)
        response = client.get("/predictions")
        assert response.status_code == 401 and "disabled" in _error(response)["message"]
        accounts.set_active(api.ctx, doc, True)
        assert client.get("/predictions").status_code == 200


def test_a_lead_reaches_only_the_projects_they_lead(api: Api) -> None:
    """The services behind the routes check the project (services/authz.py): another lead's project is
    403, the lead's own is served."""
    _, mine = api.user("lead")
    _, theirs = api.user("lead")
    own = make_project(api.ctx, f"Led by {mine}", readers=(mine,))
    other = make_project(api.ctx, f"Led by {theirs}", readers=(theirs,))
    _, token = api.token(mine, "export", "ingest", "read")
    with api.client(token) as client:
        assert client.get(f"/projects/{own}/export").status_code == 200
        response = client.get(f"/projects/{other}/export")
        assert response.status_code == 403 and "has no access to project" in _error(response)["message"]
        assert client.get(f"/projects/{other}/agreement").status_code == 403
        response = client.post(f"/projects/{other}/items", files=[("files", ("a.png", xray_png(), "image/png"))])
        assert response.status_code == 403


def test_scope_and_role_refusals(api: Api) -> None:
    _, doc = api.user("clinician")
    _, lead = api.user("lead")
    _, reader = api.user("reader")
    project = make_project(api.ctx, f"Refusals {doc}", readers=())
    _, doc_read = api.token(doc, "read")
    _, lead_read = api.token(lead, "read")
    _, reader_read = api.token(reader, "read")
    with api.client(doc_read) as client:  # scope: predictions need `predict`
        response = _predict(client, api.model, xray_png())
        assert response.status_code == 403 and "'predict'" in _error(response)["message"]
        assert client.get(f"/projects/{project}/agreement").status_code == 403  # role: leads only
    with api.client(lead_read) as client:
        assert client.get("/predictions").status_code == 403  # role: clinicians and administrators
        assert client.get(f"/projects/{project}/export").status_code == 403  # scope: `export`
        response = client.post(f"/projects/{project}/items", files=[("files", ("a.png", xray_png(), "image/png"))])
        assert response.status_code == 403 and "'ingest'" in _error(response)["message"]
    with api.client(reader_read) as client:
        assert client.get("/models").status_code == 200
        assert client.get("/predictions").status_code == 403
        assert client.get(f"/projects/{project}/agreement").status_code == 403
    from medlabel.errors import InputError

    with pytest.raises(InputError, match="may not hold scope 'predict'"):
        api.token(lead, "predict")  # a scope the role may not use is never granted


ENDPOINTS = {  # (method, path template) -> (scopes that open it, roles that may use it)
    ("POST", "/predictions"): (("predict",), ("clinician", "admin")),
    ("GET", "/predictions"): (("predict", "read"), ("clinician", "admin")),
    ("GET", "/predictions/{prediction}"): (("predict", "read"), ("clinician", "admin")),
    ("GET", "/predictions/{prediction}/heatmap"): (("predict", "read"), ("clinician", "admin")),
    ("GET", "/models"): (("predict", "read"), ("admin", "lead", "reader", "clinician")),
    ("GET", "/models/cxr-tiny"): (("predict", "read"), ("admin", "lead", "reader", "clinician")),
    ("POST", "/projects/{project}/items"): (("ingest",), ("lead", "admin")),
    ("GET", "/projects/{project}/export"): (("export",), ("lead", "admin")),
    ("GET", "/projects/{project}/agreement"): (("read",), ("lead", "admin")),
}


def test_every_role_and_scope_refusal(api: Api) -> None:
    """Each endpoint against a token of every role holding every scope the role may have, and against a
    token of an allowed role that lacks the endpoint's scope: 403 exactly where the portal's rules say."""
    from services.api_tokens import scopes_for_role

    matrix = f"Matrix {api.user('lead')[1]}"
    project = make_project(api.ctx, matrix, readers=())
    _, owner = api.user("clinician")
    _, owner_token = api.token(owner, "predict")
    with api.client(owner_token) as client:
        prediction = _predict(client, api.model, xray_png(9)).json()["id"]

    def call(client: httpx.Client, method: str, template: str) -> httpx.Response:
        path = template.format(prediction=prediction, project=project)
        if method == "POST" and path == "/predictions":
            return _predict(client, api.model, xray_png(10))
        if method == "POST":
            return client.post(path, files=[("files", ("a.png", xray_png(11), "image/png"))])
        return client.get(path)

    for role in ("admin", "lead", "reader", "clinician"):
        _, name = api.user(role)
        if role == "lead":
            add_lead(api.ctx, name, matrix)  # a project without a lead is for administrators only
        _, everything = api.token(name, *scopes_for_role(role))
        with api.client(everything) as client:
            for (method, template), (scopes, roles) in ENDPOINTS.items():
                response = call(client, method, template)
                if role not in roles:
                    assert response.status_code == 403, (role, method, template, response.text)
                    assert _error(response)["code"] == "forbidden"
                elif not set(scopes) & set(scopes_for_role(role)):
                    assert response.status_code == 403, (role, method, template)
                elif "{prediction}" in template and role != "admin":
                    assert response.status_code == 403  # another clinician's prediction
                else:
                    assert response.status_code not in (401, 403), (role, method, template, response.text)
        for (method, template), (scopes, roles) in ENDPOINTS.items():  # the right role, a scope too few
            if role not in roles:
                continue
            others = [s for s in scopes_for_role(role) if s not in scopes]
            if not others:
                continue
            _, lacking = api.token(name, *others)
            with api.client(lacking) as client:
                response = call(client, method, template)
                assert response.status_code == 403 and "scope" in _error(response)["message"], (
                    role, method, template, others)


# --- predictions --------------------------------------------------------------------------------


def test_prediction_is_the_portals_second_opinion(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    doc_id, doc = api.user("clinician")
    token_id, secret = api.token(doc, "predict")
    data = xray_png(4)
    with api.client(secret) as client:
        response = _predict(client, api.model, data, name="Quixote_Dulcinea_MRN-7781.png", top="2")
        assert response.status_code == 201, response.text
        body = response.json()
        assert {"id", "user", "model", "version", "prediction", "top", "image_state", "created_at"} <= set(body)
        assert (body["user"], f"{body['model']}:{body['version']}") == (doc, api.model)
        assert set(body["prediction"]) == set(LABELS) and len(body["top"]) == 2
        assert body["top"][0]["probability"] == max(body["prediction"].values())
        stored = client.get(f"/predictions/{body['id']}", params={"wait": 20}).json()
        assert stored["image_state"] == "stored" and stored["top"] == body["top"]
        assert [p["id"] for p in client.get("/predictions").json()][0] == body["id"]
        heat = client.get(f"/predictions/{body['id']}/heatmap")
        assert heat.status_code == 200 and heat.content.startswith(b"\x89PNG")
        assert client.get(f"/predictions/{body['id']}/heatmap", params={"label": "nope"}).status_code == 422

    # the same answer as onnxruntime on the upload, to 1e-5
    spec = inference.inspect_model(api.model_bytes, LABELS)
    direct = ort.InferenceSession(api.model_bytes, providers=["CPUExecutionProvider"]).run(
        [spec.output_name], {spec.input_name: inference.preprocess(data, spec.input)})[0][0]
    probabilities = probabilities_for(spec, direct[None])[0]
    np.testing.assert_allclose([body["prediction"][label] for label in LABELS], probabilities, atol=1e-5)

    # the clinician's history on the portal's Second opinion page, and the audit log
    assert second_opinion.history(api.ctx, doc_id)[0].id == body["id"]
    from tests.portal.conftest import signed_in

    settings = api.ctx.settings
    monkeypatch.setenv("MEDLABEL_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MEDLABEL_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("MEDLABEL_SECRET_KEY_FILE", str(settings.secret_key_file))
    page = signed_in(doc, PASSWORD)
    page.switch_page("views/second_opinion.py").run()
    assert not page.exception
    history = page.dataframe[-1].value
    assert list(history["Request"]) == [body["id"]] and list(history["Top label"]) == [body["top"][0]["label"]]
    with api.ctx.reads() as session:
        asked = session.scalars(select(AuditEvent).where(AuditEvent.action == "second_opinion.ask",
                                                         AuditEvent.target_id == str(body["id"]))).one()
        calls = session.scalars(select(AuditEvent).where(AuditEvent.action == "api.call",
                                                         AuditEvent.target_id == str(token_id))
                                .order_by(AuditEvent.id)).all()
        token = session.get(ApiToken, token_id)
    assert asked.actor_id == doc_id
    assert calls[0].payload == {"method": "POST", "route": "/api/v1/predictions", "status": 201,
                                "prediction_id": body["id"]}
    assert {c.payload["route"] for c in calls} >= {"/api/v1/predictions/{prediction_id}",
                                                    "/api/v1/predictions/{prediction_id}/heatmap"}
    assert token.last_used_at is not None
    everything = json.dumps([c.payload for c in calls]) + asked.target_id + json.dumps(asked.payload)
    assert "Quixote" not in everything and "MRN" not in everything


def test_an_unusual_upload_carries_the_models_warning(api: Api) -> None:
    from services.models import cards as model_cards
    from services.models import ood, register_model

    lead_id, _ = api.user("lead")
    _, doc = api.user("clinician")
    _, secret = api.token(doc, "predict")
    fresh = register_model(api.ctx, api.model_bytes, name=f"checked-{doc}", labels=LABELS)
    ref = f"{fresh.name}:{fresh.version}"
    model_cards.approve(api.ctx, ref, lead_id, project_id=None)
    rng = np.random.default_rng(0)
    images = rng.integers(20, 60, (100, 32, 32), dtype=np.uint8)
    ood.fit_on_images(api.ctx, ref, images[:60], images[60:], reference_name="synthetic 96 px films",
                      native_side=(96, 96))
    with api.client(secret) as client:
        unusual = _predict(client, ref, xray_png(3, size=400))  # far larger than anything it was fitted on
        assert unusual.status_code == 201, unusual.text
        body = unusual.json()
        assert body["ood"]["unusual"] is True and body["warning"].startswith("Unusual input for this model")
        assert client.get(f"/predictions/{body['id']}").json()["warning"] == body["warning"]
        plain = _predict(client, api.model, xray_png(3)).json()
        assert plain["ood"] is None and plain["warning"] == ""  # a model without a detector


def test_another_users_prediction_is_not_shown(api: Api) -> None:
    _, doc = api.user("clinician")
    _, other = api.user("clinician")
    _, mine = api.token(doc, "predict")
    _, theirs = api.token(other, "predict", "read")
    with api.client(mine) as client:
        prediction = _predict(client, api.model, xray_png(5)).json()["id"]
    with api.client(theirs) as client:
        response = client.get(f"/predictions/{prediction}")
        assert response.status_code == 403 and _error(response)["code"] == "forbidden"
        assert client.get(f"/predictions/{prediction}/heatmap").status_code == 403
        assert prediction not in [p["id"] for p in client.get("/predictions").json()]
        assert client.get("/predictions/999999").status_code == 404


def _png_bomb(side: int = 14_000) -> bytes:
    """A valid PNG header for a side x side grayscale image of zeros: ~200 M pixels in a few hundred KB."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _truncated_dicom() -> bytes:
    data = Path(get_testdata_file("CT_small.dcm", download=False)).read_bytes()
    return data[: len(data) // 2]


@pytest.mark.parametrize("kind", ["png bomb", "truncated dicom", "not an image", "empty"])
def test_hostile_uploads_are_refused_and_leave_nothing(api: Api, kind: str) -> None:
    data = {"png bomb": _png_bomb, "truncated dicom": _truncated_dicom, "not an image": lambda: b"%PDF-1.4 hello",
            "empty": lambda: b""}[kind]()
    _, doc = api.user("clinician")
    _, secret = api.token(doc, "predict")
    before = _requests(api)
    with api.client(secret) as client:
        response = _predict(client, api.model, data, name="Quixote_Dulcinea_MRN-7781.dcm")
    assert response.status_code == 422, response.text
    error = _error(response)
    assert error["code"] == "invalid_input" and "Quixote" not in error["message"]
    assert _requests(api) == before
    with api.client() as client:
        assert client.get("/health").status_code == 200  # the server lives on


def test_upload_size_and_rate_limits(api: Api) -> None:
    _, doc = api.user("clinician")
    _, secret = api.token(doc, "predict", "read")
    big = b"\x89PNG\r\n\x1a\n" + bytes(MAX_UPLOAD_MB * (1 << 20) + 10)
    with api.client(secret) as client:
        response = _predict(client, api.model, big)
        assert response.status_code == 413 and _error(response)["code"] == "payload_too_large"
        statuses = [client.get("/models").status_code for _ in range(RATE_PER_MINUTE + 5)]
        assert statuses.count(429) >= 1 and statuses[0] == 200
        limited = client.get("/models")
        assert limited.status_code == 429 and _error(limited)["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
    _, other = api.user("clinician")
    _, fresh = api.token(other, "read")
    with api.client(fresh) as client:  # limits are per token
        assert client.get("/models").status_code == 200


def test_concurrent_predictions_each_get_their_own_answer(api: Api) -> None:
    _, doc = api.user("clinician")
    tokens = [api.token(doc, "predict")[1] for _ in range(8)]
    uploads = [xray_png(20 + i) for i in range(8)]

    def ask(i: int) -> dict[str, Any]:
        with api.client(tokens[i]) as client:
            response = _predict(client, api.model, uploads[i])
            assert response.status_code == 201, response.text
            return response.json()

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    spec = inference.inspect_model(api.model_bytes, LABELS)
    session = ort.InferenceSession(api.model_bytes, providers=["CPUExecutionProvider"])
    for data, answer in zip(uploads, answers, strict=True):
        raw = session.run([spec.output_name], {spec.input_name: inference.preprocess(data, spec.input)})[0]
        expected = probabilities_for(spec, raw)[0]
        np.testing.assert_allclose([answer["prediction"][label] for label in LABELS], expected, atol=1e-5)
    assert len({a["id"] for a in answers}) == 8


# --- models -------------------------------------------------------------------------------------


def test_models_list_and_detail(api: Api) -> None:
    _, doc = api.user("clinician")
    _, secret = api.token(doc, "predict")
    with api.client(secret) as client:
        models = client.get("/models").json()
        tiny = next(m for m in models if m["name"] == "cxr-tiny")
        assert tiny["latest"] == api.model
        version = tiny["versions"][0]
        assert version["labels"] == LABELS and version["input"]["height"] == 32 and version["active"]
        assert client.get("/models/cxr-tiny").json() == tiny
        missing = client.get("/models/no-such-model")
        assert missing.status_code == 404 and "no-such-model" in _error(missing)["message"]
        unknown = _predict(client, "no-such-model", xray_png())
        assert unknown.status_code == 404


def _clinician_and_lead(api: Api) -> tuple[str, int, str, str, str]:
    """A clinician with a `predict` token and a lead with a `read` token."""
    _, doc = api.user("clinician")
    lead_id, lead = api.user("lead")
    return doc, lead_id, lead, api.token(doc, "predict")[1], api.token(lead, "read")[1]


def test_clinicians_see_and_use_approved_versions_only(api: Api) -> None:
    from services.models import cards as model_cards
    from services.models import register_model

    doc, lead_id, lead, doc_token, lead_token = _clinician_and_lead(api)
    name = f"unapproved-{doc}"
    fresh = register_model(api.ctx, api.model_bytes, name=name, labels=LABELS)
    ref = f"{fresh.name}:{fresh.version}"
    with api.client(doc_token) as client:
        assert name not in [m["name"] for m in client.get("/models").json()]
        assert client.get(f"/models/{name}").status_code == 404
        refused = _predict(client, ref, xray_png())
        assert refused.status_code == 403 and "not approved" in _error(refused)["message"]
    with api.client(lead_token) as client:
        (version,) = client.get(f"/models/{name}").json()["versions"]
        assert (version["approved"], version["active"]) == (False, True)
    model_cards.approve(api.ctx, ref, lead_id, project_id=None, training_data="synthetic test images")
    with api.client(doc_token) as client:
        listed = client.get(f"/models/{name}").json()
        assert listed["latest"] == ref and listed["versions"][0]["approved"]
        card = listed["versions"][0]["card"]
        assert card["approved_by"] == lead and card["training_data"] == "synthetic test images"
        assert _predict(client, ref, xray_png()).status_code == 201


def test_clinicians_are_not_shown_unapproved_or_removed_versions(api: Api) -> None:
    from services.models import cards as model_cards
    from services.models import deactivate, register_model

    doc, lead_id, lead, doc_token, lead_token = _clinician_and_lead(api)
    name = f"two-versions-{doc}"
    v1 = register_model(api.ctx, api.model_bytes, name=name, labels=LABELS)
    model_cards.approve(api.ctx, f"{name}:{v1.version}", lead_id, project_id=None)
    v2 = register_model(api.ctx, api.model_bytes, name=name, labels=LABELS)
    assert v2.version == v1.version + 1
    with api.client(doc_token) as client:
        shown = client.get(f"/models/{name}").json()
        assert [v["ref"] for v in shown["versions"]] == [f"{name}:{v1.version}"]
        assert shown["latest"] is None  # NAME alone means v2, which this caller is not shown
        assert shown == next(m for m in client.get("/models").json() if m["name"] == name)
        assert f"{name}:{v2.version}" not in client.get("/models").text
    with api.client(lead_token) as client:
        assert client.get(f"/models/{name}").json()["latest"] == f"{name}:{v2.version}"
    deactivate(api.ctx, f"{name}:{v2.version}")
    with api.client(doc_token) as client:
        assert client.get(f"/models/{name}").json()["latest"] == f"{name}:{v1.version}"
    deactivate(api.ctx, f"{name}:{v1.version}")  # an approved version removed from use: not listed
    with api.client(doc_token) as client:
        assert name not in [m["name"] for m in client.get("/models").json()]
        assert client.get(f"/models/{name}").status_code == 404


# --- projects -----------------------------------------------------------------------------------


def test_lead_ingests_exports_and_reads_agreement(api: Api) -> None:
    lead_id, lead = api.user("lead")
    _, r1 = api.user("reader")
    _, r2 = api.user("reader")
    name = f"API project {lead}"
    project = make_project(api.ctx, name, readers=(r1, r2, lead))  # the lead leads it
    _, secret = api.token(lead, "ingest", "export", "read")
    photo = io.BytesIO()
    Image.fromarray(np.full((64, 64), 90, np.uint8), "L").save(photo, format="JPEG")
    with api.client(secret) as client:
        response = client.post(f"/projects/{project}/items", files=[
            ("files", ("Quixote_1.jpg", photo.getvalue(), "image/jpeg")),
            ("files", ("notes.txt", b"not an image", "text/plain")),
            ("files", ("half.dcm", _truncated_dicom(), "application/dicom")),
            ("files", ("bomb.png", _png_bomb(), "image/png"))])
        assert response.status_code == 200, response.text
        body = response.json()
        assert [f["status"] for f in body["files"]] == ["released", "refused", "refused", "refused"]
        assert "pixel budget" in body["files"][3]["reason"]
        assert body["released"] == 1 and body["refused"] == 3 and "Quixote" not in response.text
        assert client.get("/projects/99999/export").status_code == 404

        items = make_items(api.ctx, project, 4, start=100)
        with api.ctx.sessions.begin() as session:
            readers = {u.username: u.id for u in accounts.list_users(api.ctx)}
            for i, item in enumerate(items):
                session.add(Annotation(item_id=item, user_id=readers[r1], kind=AnnotationKind.LABEL,
                                       labels=["normal" if i % 2 else "pneumonia"]))
                session.add(Annotation(item_id=item, user_id=readers[r2], kind=AnnotationKind.LABEL,
                                       labels=["normal" if i < 2 else "pneumonia"]))
        coco = client.get(f"/projects/{project}/export", params={"format": "coco"})
        assert coco.status_code == 422 and "bounding-box" in _error(coco)["message"]  # as the CLI says
        for fmt in ("csv", "jsonl"):
            exported = client.get(f"/projects/{project}/export", params={"format": fmt, "seed": 3})
            assert exported.status_code == 200, exported.text
            assert exported.content == export_project(api.ctx, project, fmt, seed=3, actor=LOCAL_ADMIN)
        bad = client.get(f"/projects/{project}/export", params={"format": "xlsx"})
        assert bad.status_code == 422 and _error(bad)["code"] == "invalid_input"
        report = client.get(f"/projects/{project}/agreement", params={"n_boot": 50}).json()
        assert report == json.loads(json.dumps(agreement_for_project(api.ctx, project, n_boot=50, actor=LOCAL_ADMIN).to_json()))
        assert report["n_items"] == 4
    with api.ctx.reads() as session:
        ingest = session.scalars(select(AuditEvent).where(AuditEvent.action == "ingest",
                                                          AuditEvent.actor_id == lead_id)).one()
    assert ingest.payload["released"] == 1
