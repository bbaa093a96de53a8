"""Intake: every file goes through de-identification in memory before anything is stored.

Originals never touch the disk or the database. Released items join the labelling queue;
flagged items are quarantined until a reviewer masks and releases them (or rejects them);
refused files are reported and nothing of them is kept. Each file is its own transaction, so
a bad file never undoes or half-writes another, and any failure on one file refuses that file only
(with a reason that names no value from it) while the batch goes on. Folders are walked without
following symbolic links (a linked file or folder is refused: it may lead out of the folder given),
and every file is held to the installation's pixel budget (``MEDLABEL_PIXEL_BUDGET_MB``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import pydicom
from cryptography.fernet import InvalidToken
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import deid
from db.models import DeidStatus, PseudonymKey
from db.queries import imaging as imaging_q
from db.queries import projects as projects_q
from inference.types import InputSpec
from medlabel.errors import ConfigError, InputError, MedlabelError, NotFoundError, PermissionDenied
from services import audit, authz, reid_keys
from services.audit_events import Ingested, ItemIngested, Reidentified
from services.config import ServiceConfig
from services.context import AppContext
from services.dto import IngestOutcome, IngestReport
from services.items import add_item
from services.jobs import params as job_params
from services.jobs.fanout import chunked, fan_out
from services.jobs.kinds import JobParams, register_kind
from services.jobs.protocol import JobReporter

logger = logging.getLogger(__name__)




def iter_files(paths: Iterable[str | Path]) -> Iterator[Path]:
    """Entries under ``paths`` (recursively, sorted); hidden ones skipped; links to files or folders are
    listed, never followed (reading refuses them: ``deid.io.read_regular``)."""
    from deid.io import iter_sources

    for raw in paths:
        path = Path(raw)
        if not path.exists() and not path.is_symlink():
            raise InputError(path, "no such file or folder")
        yield from iter_sources(path)


def ingest_paths(ctx: AppContext, project_id: int, paths: Iterable[str | Path], *,
                 actor: authz.ActorRef, options: deid.DeidOptions | None = None) -> IngestReport:
    """De-identify the files under ``paths`` into project ``project_id`` (see :func:`ingest_blobs`)."""
    from deid.io import read_regular

    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    files = list(iter_files(paths))
    return ingest_blobs(ctx, project_id, ((str(p), partial(read_regular, p)) for p in files),
                        actor=actor, options=options)


def ingest_uploads(ctx: AppContext, project_id: int, uploads: Iterable[tuple[str, bytes]], *,
                   actor: authz.ActorRef, options: deid.DeidOptions | None = None) -> IngestReport:
    """De-identify ``(name, bytes)`` uploads into project ``project_id`` (see :func:`ingest_blobs`)."""
    # bytes(data) is data itself: the upload is not copied
    return ingest_blobs(ctx, project_id, ((name, partial(bytes, data)) for name, data in uploads),
                        actor=actor, options=options)


def ingest_blobs(ctx: AppContext, project_id: int, blobs: Iterable[tuple[str, Callable[[], bytes]]], *,
                 actor: authz.ActorRef, options: deid.DeidOptions | None = None) -> IngestReport:
    """De-identify and store each ``(source name, read())`` pair in project ``project_id``; returns one
    outcome per file (the report names the project). Leads ingest into the projects they lead
    (services/authz.py)."""
    actor_id = authz.require_project(ctx, actor, project_id, roles=authz.LEADS).user_id
    key = ctx.settings.secret_key()
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        project_name, seed, reid = project.name, project.queue_seed, project.allow_reidentification
    if reid:
        reid_keys.public_key(ctx.settings)  # a missing re-identification key stops the batch before any file
    from services.models import model_input_specs  # late: the model registry pulls in onnx

    specs = model_input_specs(ctx)
    options = dataclasses.replace(options or deid.DeidOptions(), max_pixel_bytes=ctx.settings.pixel_budget_bytes)
    outcomes = []
    for source, read in blobs:
        try:
            data = read()
            outcomes.append(_ingest_one(ctx, project_id, seed, reid, source, data, key, actor_id, options, specs))
        except MedlabelError as exc:
            outcomes.append(IngestOutcome(source=source, status="refused", reason=_reason(exc)))
        except OSError as exc:
            outcomes.append(IngestOutcome(source=source, status="refused", reason=f"cannot read: {exc.strerror}"))
        except Exception as exc:  # noqa: BLE001 - one odd file never stops the batch; its message may quote a value
            logger.warning("ingest: a file was refused after %s", type(exc).__name__)
            outcomes.append(IngestOutcome(source=source, status="refused",
                                          reason=f"cannot be stored ({type(exc).__name__})"))
    report = IngestReport(project=project_name, outcomes=tuple(outcomes))
    with ctx.sessions.begin() as session:
        audit.record(session, Ingested(target_id=project_id, released=report.count("released"),
                                       quarantined=report.count("quarantined"), refused=report.count("refused"),
                                       duplicate=report.count("duplicate")), actor_id=actor_id)
    return report


def _save_model_renditions(ctx: AppContext, digest: str, data: bytes, specs: Sequence[InputSpec]) -> None:
    """Decode once at intake: keep each registered model size's rendition, so pre-labelling skips decoding.

    A rendition that cannot be made is simply not saved (pre-labelling decodes the item then and reports
    the problem there); intake never fails for it."""
    from inference.pipeline import DerivedRenditions, encode_rendition, rendition_key
    from inference.preprocess import model_rendition

    for spec in specs:
        cache = DerivedRenditions(ctx.store, rendition_key(spec))
        if cache.get(digest) is not None:
            continue
        try:
            cache.put(digest, encode_rendition(model_rendition(data, spec)))
        except (MedlabelError, ValueError, OSError):
            continue


def _reason(exc: MedlabelError) -> str:
    return exc.reason if isinstance(exc, InputError) else str(exc)


def _ingest_one(ctx: AppContext, project_id: int, seed: int, reid: bool, source: str, data: bytes, key: bytes,
                actor_id: int | None, options: deid.DeidOptions, specs: Sequence[InputSpec] | None = None,
                ) -> IngestOutcome:
    # The engine sees only the file's base name for its messages; the name itself is never stored.
    result = deid.deidentify_bytes(data, key=key, name=Path(source).name, options=options)
    if result.status == "refused" or result.output is None:
        return IngestOutcome(source=source, status="refused", reason=result.reason or "refused by de-identification")
    if result.kind == "dicom" and not (result.width and result.height):
        return IngestOutcome(source=source, status="refused", reason="not an image (no pixel data): nothing to label")
    digest, relative = ctx.store.put(result.output, result.suffix)
    status = DeidStatus.RELEASED if result.status == "released" else DeidStatus.QUARANTINED
    try:
        with ctx.sessions.begin() as session:
            item = add_item(session, project_id=project_id, queue_seed=seed, content_hash=digest, stored_path=relative,
                            kind=result.kind, modality=result.modality, width=result.width, height=result.height,
                            frames=result.frames, patient_pseudonym=result.patient_pseudonym,
                            study_pseudonym=result.study_pseudonym, series_pseudonym=result.series_pseudonym,
                            deid_status=status, deid_report=_report(result), attributes=result.characteristics)
            if reid and result.kind == "dicom" and result.patient_pseudonym:
                _remember_patient(session, project_id, result.patient_pseudonym, data, ctx.settings)
            audit.record(session, ItemIngested(target_id=item.id, status=status.value,
                                               sha256=digest), actor_id=actor_id)
            item_id = item.id
    except IntegrityError:
        return IngestOutcome(source=source, status="duplicate", reason="already in this project")
    if status == DeidStatus.RELEASED and specs:
        _save_model_renditions(ctx, digest, result.output, specs)
    return IngestOutcome(source=source, status=status.value, item_id=item_id, reason=result.reason or "")


def _report(result: deid.DeidResult) -> dict[str, Any]:
    """The engine's report plus the detected text boxes: coordinates and scores only, never the text."""
    report = dict(result.report)
    report["text_boxes"] = [[int(b[0]), *(int(round(v)) for v in b[1:5]), round(float(b[5]), 3)]
                            for b in result.boxes]
    return report


def _original_patient_id(data: bytes) -> str | None:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # noqa: BLE001 - the engine already accepted the file; no id means nothing to keep
        return None
    value = str(ds.get("PatientID", "") or "").strip()
    return value or None


def _remember_patient(session: Session, project_id: int, pseudonym: str, data: bytes,
                      settings: ServiceConfig) -> None:
    """Store pseudonym -> original PatientID, sealed to the re-identification key's public half (a Dask
    worker can write it, only the portal and the CLI can read it), for projects that allow it."""
    original = _original_patient_id(data)
    if original is None:
        return
    if imaging_q.pseudonym_key(session, project_id, pseudonym) is None:
        session.add(PseudonymKey(project_id=project_id, pseudonym=pseudonym,
                                 encrypted_original=reid_keys.seal(settings, original.encode())))


def reidentify(ctx: AppContext, project_id: int, pseudonym: str, *, actor: authz.ActorRef) -> str:
    """The original PatientID behind ``pseudonym`` in project ``project_id``. Admins only, projects that
    allow it only, and every look-up (found or not) is audited."""
    actor_id = authz.require_project(ctx, actor, project_id, roles=authz.ADMIN).user_id
    with ctx.sessions.begin() as session:
        project = projects_q.require_project_id(session, project_id)
        if not project.allow_reidentification:
            raise PermissionDenied(f"project {project.name!r} does not allow re-identification")
        row = imaging_q.pseudonym_key(session, project.id, pseudonym)
        audit.record(session, Reidentified(target_id=project.id, pseudonym=pseudonym,
                                           found=row is not None), actor_id=actor_id)
        token = None if row is None else row.encrypted_original
    if token is None:
        raise NotFoundError(f"no re-identification key for pseudonym {pseudonym!r}")
    try:
        return reid_keys.unseal(ctx.settings, token).decode()
    except InvalidToken:
        raise ConfigError(f"the re-identification key ({ctx.settings.reid_key_path}) does not open the key of "
                          f"pseudonym {pseudonym!r}; run `medlabel init` (it moves keys written before 0.9)") from None


# --- as a job (services.jobs) --------------------------------------------------------------------


@dataclass(frozen=True)
class IngestParams(JobParams):
    """An ``ingest`` job: de-identify ``paths`` (files or folders every worker can read) into project
    ``project_id``, ``chunk_size`` files per task spread over the cluster."""

    project_id: int
    paths: tuple[str, ...]
    dates: Literal["shift", "remove"] = "shift"
    keep_patient_characteristics: bool = False
    chunk_size: int = job_params.DEFAULT_CHUNK


def check_ingest(ctx: AppContext, params: IngestParams) -> IngestParams:
    """The project exists, ``paths`` name files or folders that exist (made absolute) and ``chunk_size``
    is in range."""
    with ctx.reads() as session:
        projects_q.require_project_id(session, params.project_id)
    if not params.paths:
        raise InputError(None, "missing job parameter(s): paths")
    resolved = tuple(str(Path(p).expanduser().absolute()) for p in params.paths)
    for p in resolved:
        if not Path(p).exists():
            raise InputError(p, "no such file or folder")
    job_params.chunk_size(params.chunk_size)
    return dataclasses.replace(params, paths=resolved)


def _without_name(reason: str, source: str) -> str:
    name = Path(source).name
    return reason.replace(name, "<file>") if name else reason


def ingest_chunk(ctx: AppContext, files: list[tuple[int, str]], *, should_stop: Callable[[], bool],
                 project_id: int, options: dict[str, Any], actor_id: int | None) -> dict[str, Any]:
    """De-identify and store these files. Refusals keep the file's position in the job's listing and the
    reason, never the file's name (it may hold an identifier)."""
    # the submitter's rights, checked again at every chunk
    report = ingest_paths(ctx, project_id, [path for _, path in files], actor=authz.job_actor(actor_id),
                          options=deid.DeidOptions(**options))
    counts = {s: report.count(s) for s in ("released", "quarantined", "duplicate", "refused")}
    refused = [[index, _without_name(outcome.reason, outcome.source)]
               for (index, _), outcome in zip(files, report.outcomes, strict=True) if outcome.status == "refused"]
    return {**counts, "refused_files": refused}


def ingest_job(ctx: AppContext, params: IngestParams, reporter: JobReporter) -> dict[str, Any]:
    """De-identify ``params.paths`` into project ``params.project_id``; files already there count as
    duplicates."""
    params = check_ingest(ctx, params)
    files = list(enumerate(str(p) for p in iter_files(params.paths)))
    chunks = chunked(files, params.chunk_size)
    reporter.progress(0, len(files), f"{len(files)} files to de-identify in {len(chunks)} chunks")
    totals = {"released": 0, "quarantined": 0, "duplicate": 0, "refused": 0}
    refused: list[list[Any]] = []
    done = 0
    options = {"dates": params.dates, "keep_patient_characteristics": params.keep_patient_characteristics}
    with closing(fan_out(ctx, reporter, ingest_chunk, chunks, project_id=params.project_id, options=options,
                         actor_id=reporter.actor_id)) as results:
        for n, out in results:
            done += n
            for key in totals:
                totals[key] += out[key]
            refused += out["refused_files"]
            reporter.progress(done, len(files), ", ".join(f"{v} {k}" for k, v in totals.items()))
    return {"files": len(files), **totals, "refusals": refused[:50]}


register_kind("ingest", ingest_job, IngestParams, check=check_ingest)
