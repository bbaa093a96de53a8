"""kill -9 at random points during ingest and pre-labelling (real `medlabel` processes): the rerun finishes
with no duplicate item or prediction, every stored file is whole (its name is its content's SHA-256), no
row points at a missing file, and the audit chain holds."""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

import inference
from db.models import Item, Prediction
from medlabel.settings import Settings
from services import audit
from services.context import AppContext
from services.models import register_model
from tests.services.factories import make_project

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data" / "nih-chestxray14-1000" / "train" / "0_normal"


def _run(env: dict[str, str], *args: str, kill_after: float | None = None) -> int:
    proc = subprocess.Popen([sys.executable, "-m", "medlabel.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if kill_after is None:
        return proc.wait(timeout=600)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=60)


def _store_is_whole(ctx: AppContext, settings: Settings) -> None:
    for path in settings.store_dir.rglob("*"):
        if path.is_file() and not path.name.startswith(".tmp-") and len(path.stem) == 64:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, path  # never a partial blob
    with ctx.reads() as session:
        for stored in session.scalars(select(Item.stored_path)):
            assert ctx.store.exists(stored)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_kill_9_during_ingest_and_prelabel_then_rerun(ctx: AppContext, settings: Settings, env_for,  # type: ignore[no-untyped-def]
                                                      tmp_path: Path, db_url: str) -> None:
    rng = random.Random(14)
    make_project(ctx)
    folder = tmp_path / "incoming"
    folder.mkdir()
    files = sorted(SAMPLES.glob("*.png"))[:16]
    for source in files:
        (folder / source.name).write_bytes(source.read_bytes())
    env = env_for(settings)
    for _ in range(2):  # killed twice at random points, then run to the end
        _run(env, "ingest", "Chest", str(folder), kill_after=rng.uniform(1.0, 6.0))
        _store_is_whole(ctx, settings)
    assert _run(env, "ingest", "Chest", str(folder)) in (0, 1)
    with ctx.reads() as session:
        hashes = session.scalars(select(Item.content_hash)).all()
    assert len(hashes) == len(set(hashes)) == len(files)  # every file once
    _store_is_whole(ctx, settings)

    register_model(ctx, inference.build_tiny_cnn(input_hw=(28, 28), channels=1, n_classes=2, filters=8),
                   name="tiny", labels=["normal", "pneumonia"])
    for _ in range(2):
        _run(env, "prelabel", "Chest", "--model", "tiny", "--batch-size", "2", kill_after=rng.uniform(1.0, 5.0))
    assert _run(env, "prelabel", "Chest", "--model", "tiny") == 0
    with ctx.reads() as session:
        released = session.scalar(select(func.count()).select_from(Item).where(Item.deid_status == "released"))
        rows = session.execute(select(Prediction.item_id, Prediction.model_id)).all()
    assert len(rows) == len(set(rows)) == released
    assert audit.verify(ctx).broken_at is None
