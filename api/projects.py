"""``/projects/{id}``: intake, export and agreement, for leads (and administrators) as on the portal."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.responses import Response

from api import PREFIX
from api.auth import caller
from api.errors import ApiError
from api.schemas import Error, FileOutcome, IngestResult
from services import projects
from services.agreement_report import agreement_for_project
from services.api_tokens import Caller
from services.export import export_project
from services.ingest import ingest_uploads

router = APIRouter(prefix=f"{PREFIX}/projects", tags=["projects"])
LEADS = ("lead", "admin")
INGEST = caller(("ingest",), LEADS)
EXPORT = caller(("export",), LEADS)
READ = caller(("read",), LEADS)
ERRORS = {code: {"model": Error} for code in (401, 403, 404, 413, 422, 429)}
MAX_FILES = 100
MEDIA = {"csv": "text/csv", "jsonl": "application/x-ndjson", "coco": "application/json"}


@router.post("/{project_id}/items", response_model=IngestResult, responses=ERRORS,
             summary="Upload files into a project through de-identifying intake")
def add_items(request: Request, who: Annotated[Caller, Depends(INGEST)], project_id: int,
              files: Annotated[list[UploadFile], File(description="DICOM, PNG or JPEG files.")]) -> IngestResult:
    """The same intake as the Ingest page and `medlabel ingest`: each file is de-identified before it
    is stored; flagged ones are quarantined for review. One outcome per file, in the order sent (at most
    100 files). Scope `ingest`; leads and administrators."""
    if len(files) > MAX_FILES:
        raise ApiError(413, "payload_too_large", f"at most {MAX_FILES} files per request")
    ctx = request.app.state.ctx
    name = projects.project_name(ctx, project_id)
    uploads = [(f"upload-{i + 1}", f.file.read()) for i, f in enumerate(files)]  # names may be identifiers
    report = ingest_uploads(ctx, project_id, uploads, actor=who.user_id)
    request.state.audit = {"project_id": project_id, "files": len(files)}
    return IngestResult(project=name, released=report.count("released"), quarantined=report.count("quarantined"),
                        duplicate=report.count("duplicate"), refused=report.count("refused"),
                        files=[FileOutcome(index=i, status=o.status, item_id=o.item_id, reason=o.reason)
                               for i, o in enumerate(report.outcomes)])


@router.get("/{project_id}/export", responses={**ERRORS, 200: {"content": {m: {} for m in MEDIA.values()}}},
            response_class=Response, summary="A project's labels (csv, jsonl or coco)")
def export(request: Request, who: Annotated[Caller, Depends(EXPORT)], project_id: int,
           format: Annotated[Literal["csv", "jsonl", "coco"], Query()] = "csv",  # noqa: A002
           seed: Annotated[int, Query(description="Seed of the patient-level split.")] = 0) -> Response:
    """The same bytes as `medlabel export PROJECT --format FORMAT --seed SEED`. Scope `export`; leads and
    administrators."""
    ctx = request.app.state.ctx
    request.state.audit = {"project_id": project_id, "format": format}
    return Response(export_project(ctx, project_id, format, seed=seed, actor=who.user_id), media_type=MEDIA[format])


@router.get("/{project_id}/agreement", responses=ERRORS, summary="The agreement report")
def agreement(request: Request, who: Annotated[Caller, Depends(READ)], project_id: int,
              round_id: Annotated[int | None, Query(alias="round")] = None,
              n_boot: Annotated[int, Query(ge=0, le=10_000)] = 1000,
              seed: Annotated[int, Query()] = 0) -> dict[str, Any]:
    """The same JSON as `medlabel agreement --project NAME --json` (422 while the project has no ratings).
    Scope `read`; leads and administrators."""
    ctx = request.app.state.ctx
    request.state.audit = {"project_id": project_id}
    return agreement_for_project(ctx, project_id, round_id=round_id, n_boot=n_boot, seed=seed,
                                 actor=who.user_id).to_json()
