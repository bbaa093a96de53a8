"""Dask workers never hold the re-identification key (issue 14, item 9: separate keys).

Before, every task carried the settings with the key file's path, and a worker ingesting into a
re-identifying project read the Fernet key, which opens every original patient id as well as it
encrypts them: any code run on a worker (a pickled task, a model file exploiting onnxruntime) could
re-identify every patient. Now a worker gets the key's public half only, seals with it, and cannot
load the key itself; re-identification stays in the portal and the CLI (services/reid_keys.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import InvalidToken
from sqlalchemy import select

from db.models import PseudonymKey
from medlabel.benchmarks.deid_corpus import PATIENT_ID, plant, real
from medlabel.errors import ConfigError
from medlabel.settings import Settings
from services import accounts, jobs, reid_keys
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import IngestParams, reidentify
from services.jobs import cluster
from services.projects import LabelSpec, ProjectSpec, create_project

WAIT_S = 240


def test_a_task_carries_no_key_and_a_worker_cannot_load_it(settings: Settings) -> None:
    payload = cluster.settings_payload(settings)
    text = json.dumps(payload)
    key = settings.reid_key().decode()
    assert key not in text and str(settings.reid_key_path) not in text and payload["reid_key_file"] is None
    assert payload["reid_public_key"]  # the public half, to seal
    on_worker = cluster.settings_from_payload(payload)
    with pytest.raises(ConfigError, match="not available to Dask workers"):
        on_worker.reid_key()
    sealed = reid_keys.seal(on_worker, PATIENT_ID.encode())
    assert PATIENT_ID.encode() not in sealed
    with pytest.raises(ConfigError, match="not available to Dask workers"):
        reid_keys.unseal(on_worker, sealed)
    assert reid_keys.unseal(settings, sealed) == PATIENT_ID.encode()  # the portal, holding the key file
    # a worker's settings sent on again (a job's chunk tasks) stay without the key
    assert cluster.settings_payload(on_worker)["reid_public_key"] == payload["reid_public_key"]
    other_key = settings.data_dir / "other.key"
    other_key.write_bytes(b"A" * 43 + b"=\n")
    other = Settings(data_dir=settings.data_dir, database_url=settings.database_url,
                     secret_key_file=settings.secret_key_file, reid_key_file=other_key)
    with pytest.raises(InvalidToken):
        reid_keys.unseal(other, sealed)


def probe(payload: dict[str, Any], key: str) -> dict[str, Any]:
    """On a worker process: what it can see of the re-identification key."""
    ctx = cluster.worker_context(payload)
    try:
        ctx.settings.reid_key()
        loaded = "loaded"
    except ConfigError as exc:
        loaded = str(exc)
    return {"pid": os.getpid(), "in_env": any(key in v for v in os.environ.values()), "loaded": loaded}


def test_an_ingest_job_on_worker_processes_seals_what_only_the_portal_opens(
        ctx: AppContext, settings: Settings, tmp_path: Path) -> None:
    admin = accounts.add_user(ctx, "boss", "a-long-password", "admin").id
    pid = create_project(ctx, ProjectSpec(name="Reid", task_type="single_label", allow_reidentification=True,
                                          labels=(LabelSpec("a", "1"),)))
    source = tmp_path / "in" / "r.dcm"
    source.parent.mkdir()
    source.write_bytes(plant(real("CT_small.dcm"), "R").data)
    client = cluster.start_local(1, processes=True, local_directory=settings.data_dir / "dask-scratch")
    try:
        job = jobs.wait(ctx, jobs.submit(ctx, "ingest", IngestParams(project_id=pid, paths=(str(source.parent),)),
                                         LOCAL_ADMIN).id, timeout_s=WAIT_S, poll_s=0.2)
        assert job.state == "succeeded" and job.result["released"] + job.result["quarantined"] == 1, job.error
        seen = client.submit(probe, cluster.settings_payload(settings), settings.reid_key().decode(),
                             pure=False).result(timeout=WAIT_S)
    finally:
        cluster.close()
        cluster.forget_contexts()
    assert seen["pid"] != os.getpid()  # a worker process, as in production
    assert not seen["in_env"] and "not available to Dask workers" in seen["loaded"]
    with ctx.reads() as session:
        row = session.scalars(select(PseudonymKey)).one()
    assert row.encrypted_original.startswith(reid_keys.SEALED) and PATIENT_ID.encode() not in row.encrypted_original
    assert reidentify(ctx, pid, row.pseudonym, actor=admin) == PATIENT_ID
