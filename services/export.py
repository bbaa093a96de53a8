"""Exports: one row per released item, with pseudonymous ids only, final label and provenance,
every reader's label, agreement, model predictions, de-identification reference and a patient split."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from agreement.consensus import current_reads, final_label, patient_splits
from db.models import TaskType
from db.queries import export as export_q
from db.queries import projects as projects_q
from medlabel.errors import InputError
from medlabel.text import csv_cell
from services import audit, authz, projects
from services.audit_events import Exported
from services.context import AppContext
from services.jobs.kinds import JobParams, register_kind
from services.jobs.protocol import JobReporter

FORMATS = ("csv", "jsonl", "coco")


def export_rows(ctx: AppContext, project_id: int, *, seed: int = 0, actor: authz.ActorRef) -> list[dict[str, Any]]:
    """One row per released item of project ``project_id`` (leads of the project and administrators)."""
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    return _export_rows(ctx, project_id, seed=seed)


def _export_rows(ctx: AppContext, project_id: int, *, seed: int = 0) -> list[dict[str, Any]]:
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        items = export_q.released_items(session, project.id)
        annotations = export_q.annotations_of_project(session, project.id)
        predictions = export_q.predictions_of_project(session, project.id)
    reads = current_reads((a.item_id, user, a.kind.value, a.labels, a.retracted, a.boxes) for a, user in annotations)
    preds: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for p, m in predictions:
        preds[p.item_id].append({"model": m.name, "version": m.version, "variant": m.variant,
                                 "probabilities": p.probabilities})
    finals = {item.id: final_label(reads.get(item.id, [])) for item in items}
    splits = patient_splits(
        {item.id: (item.patient_pseudonym, "|".join(finals[item.id].labels or ("unlabelled",))) for item in items},
        seed=seed)
    rows = []
    for item in items:
        final = finals[item.id]
        rows.append({
            "item_id": item.id,
            "sha256": item.content_hash,
            "patient_id": item.patient_pseudonym,
            "study_id": item.study_pseudonym,
            "series_id": item.series_pseudonym,
            "modality": item.modality,
            "width": item.width,
            "height": item.height,
            "final_label": "|".join(final.labels) if final.labels is not None else None,
            "provenance": final.provenance,
            "reads": final.reads,
            "agreement": None if final.agreement is None else round(final.agreement, 4),
            "reader_labels": {r.reader: "|".join(r.labels) for r in reads.get(item.id, [])
                              if r.kind in ("label", "verification")},
            "boxes": list(final.boxes),
            "predictions": preds.get(item.id, []),
            "deid_report": f"medlabel://items/{item.id}/deid-report",
            "deid_method": item.deid_report.get("method", item.deid_report.get("profile", "")),
            "split": splits[item.id],
        })
    return rows


def export_project(ctx: AppContext, project_id: int, fmt: str, *, seed: int = 0,
                   actor: authz.ActorRef) -> bytes:
    """Project ``project_id``'s labels in ``fmt``; every export is audited (who, which project, format, rows)."""
    actor_id = authz.require_project(ctx, actor, project_id, roles=authz.LEADS).user_id
    if fmt not in FORMATS:
        raise InputError(None, f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    rows = _export_rows(ctx, project_id, seed=seed)
    if fmt == "jsonl":
        data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode()
    elif fmt == "csv":
        data = _csv(rows)
    else:
        data = _coco(ctx, project_id, rows)
    with ctx.sessions.begin() as session:
        audit.record(session, Exported(target_id=project_id, format=fmt, rows=len(rows), seed=seed), actor_id=actor_id)
    return data


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    fields = list(rows[0]) if rows else ["item_id", "patient_id", "study_id", "final_label", "provenance", "split"]
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: csv_cell(json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v)
                         for k, v in row.items()})
    return buffer.getvalue().encode()


def _coco(ctx: AppContext, project_id: int, rows: list[dict[str, Any]]) -> bytes:
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        project_name = project.name
        if project.task_type != TaskType.BOXES:
            raise InputError(None, f"COCO export needs a bounding-box project; {project_name!r} is "
                                   f"{project.task_type.value.replace('_', '-')}")
        categories = [{"id": i + 1, "name": label.name} for i, label in enumerate(project.labels)]
    ids = {c["name"]: c["id"] for c in categories}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for row in rows:
        # final_label carries an image-level answer ('no finding', 'indeterminate'): an image without
        # annotations is then a read normal study, not an unread one.
        images.append({"id": row["item_id"], "file_name": f"{row['sha256']}", "width": row["width"],
                       "height": row["height"], "patient_id": row["patient_id"], "split": row["split"],
                       "final_label": row["final_label"], "provenance": row["provenance"]})
        for box in row["boxes"]:
            w, h = box["x1"] - box["x0"], box["y1"] - box["y0"]
            annotations.append({"id": len(annotations) + 1, "image_id": row["item_id"],
                                "category_id": ids[box["label"]], "bbox": [box["x0"], box["y0"], w, h],
                                "area": w * h, "iscrowd": 0, "provenance": row["provenance"]})
    return json.dumps({"info": {"description": f"medlabel export of {project_name}"}, "images": images,
                       "annotations": annotations, "categories": categories}, indent=1).encode()


# --- as a job (services.jobs) --------------------------------------------------------------------


@dataclass(frozen=True)
class ExportParams(JobParams):
    """An ``export`` job: project ``project_id``'s labels in ``format`` (csv | jsonl | coco), the
    patient-level split drawn with ``seed``."""

    project_id: int
    format: str
    seed: int = 0


def check_export(ctx: AppContext, params: ExportParams) -> ExportParams:
    """The project exists and the format is one of ``FORMATS``."""
    with ctx.reads() as session:
        projects_q.require_project_id(session, params.project_id)
    if params.format not in FORMATS:
        raise InputError(None, f"unknown export format {params.format!r} (choose {', '.join(FORMATS)})")
    return params


def export_job(ctx: AppContext, params: ExportParams, reporter: JobReporter) -> dict[str, Any]:
    """Export a project's labels into the content store; the result names the stored file."""
    params = check_export(ctx, params)
    reporter.progress(0, 1, f"exporting {projects.project_name(ctx, params.project_id)} as {params.format}")
    data = export_project(ctx, params.project_id, params.format, seed=params.seed,
                          actor=authz.job_actor(reporter.actor_id))
    suffix = ".json" if params.format in ("jsonl", "coco") else ""
    digest, stored = ctx.store.put(data, suffix)
    reporter.progress(1, 1, f"{len(data)} bytes")
    return {"format": params.format, "bytes": len(data), "sha256": digest, "stored_path": stored}


register_kind("export", export_job, ExportParams, check=check_export)
