"""kill -9 at random points during ingest, pre-labelling (real `medlabel` processes) and retraining: the rerun
finishes with no duplicate item, prediction, model version or round, every stored file is whole (its name is
its content's SHA-256), no row points at a missing file, and the audit chain holds."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

import inference
from db.models import ActiveLearningRound, Item, ModelVersion, Prediction, Project
from medlabel.settings import Settings
from services import audit
from services.context import AppContext
from services.models import register_model
from tests.conftest import EnvFor
from tests.services.factories import make_project
from tests.services.test_active_learning import labelled_project, project  # noqa: F401 - fixtures

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
        derived = path.relative_to(settings.store_dir).parts[0] == "derived"  # named after their source
        if path.is_file() and not path.name.startswith(".tmp-") and len(path.stem) == 64 and not derived:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, path  # never a partial blob
    with ctx.reads() as session:
        for stored in session.scalars(select(Item.stored_path)):
            assert ctx.store.exists(stored)


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_kill_9_during_ingest_and_prelabel_then_rerun(ctx: AppContext, settings: Settings, env_for: EnvFor,
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


# --- retraining ------------------------------------------------------------------------------------------

_RETRAIN = """
import sys
import time
from services import learning as al
from medlabel.settings import load_settings
from services.context import AppContext
from services.jobs.protocol import NullReporter
from services.projects import project_id as pid_of


class Loud(NullReporter):
    def progress(self, done, total=None, message=""):
        super().progress(done, total, message)
        print(f"step {done}", flush=True)
        time.sleep(0.4)  # a small project's steps take milliseconds: room for the kill to land inside the run


ctx = AppContext.from_settings(load_settings())
report = al.retrain(ctx, pid_of(ctx, "Chest"), reporter=Loud())
print(f"done {report.model_ref} adopted={report.adopted}", flush=True)
"""


def _retrain(env: dict[str, str], kill_at: tuple[int, float] | None = None) -> list[str]:
    """A retraining process; with ``kill_at`` = (step, delay) it gets SIGKILL (with its decoding workers)
    ``delay`` seconds after it reports that step (it pauses 0.4 s at each step: a delay past that lands in
    the step's work)."""
    lines: list[str] = []
    with subprocess.Popen([sys.executable, "-c", _RETRAIN], env=env, stdout=subprocess.PIPE, text=True,
                          stderr=subprocess.STDOUT, start_new_session=True) as proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                lines.append(line.strip())
                if kill_at is not None and line.strip() == f"step {kill_at[0]}":
                    time.sleep(kill_at[1])
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
        finally:
            if proc.poll() is None and kill_at is None:
                proc.wait(timeout=600)
            elif proc.poll() is None:
                proc.wait(timeout=60)
    return lines


@pytest.mark.slow
@pytest.mark.usefixtures("labelled_project")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_kill_9_during_retraining_then_rerun(ctx: AppContext, settings: Settings, env_for: EnvFor,
                                             db_url: str) -> None:
    rng = random.Random(10)
    env = env_for(settings)
    # Steps 1..5 of services.learning.retrain: fit, export, register, pre-label, score and install.
    for step in rng.sample(range(1, 6), 3) + [4]:
        lines = _retrain(env, kill_at=(step, rng.uniform(0.0, 0.5)))
        assert f"step {step}" in lines and not any(line.startswith("done") for line in lines), lines  # killed mid-run
        _store_is_whole(ctx, settings)
    lines = _retrain(env)
    assert lines and lines[-1].startswith("done "), lines
    ref = lines[-1].split()[1]

    with ctx.reads() as session:
        rounds = session.scalars(select(ActiveLearningRound)).all()
        preds = session.execute(select(Prediction.item_id, Prediction.model_id)).all()
        models = session.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()
        project = session.scalars(select(Project)).one()
    # A kill can land after a run's final transaction committed: that run finished, and the rerun is one
    # more round. Each round has its own version; every other version a killed run registered is withdrawn.
    assert rounds and len({r.model_id for r in rounds}) == len(rounds), [(r.id, r.model_id) for r in rounds]
    assert len(preds) == len(set(preds))  # no prediction twice
    new = next(m for m in models if f"{m.name}:{m.version}" == ref)
    assert rounds[-1].model_id == new.id
    with_predictions = {m for _, m in preds}
    in_rounds = {r.model_id for r in rounds}
    for m in models[1:]:  # out of use, none of its predictions left
        if m.id not in in_rounds:
            assert not m.is_active and m.id not in with_predictions, (m.name, m.version, m.is_active)
    if rounds[-1].state != "held":
        assert (project.settings or {}).get("model") == ref
    _store_is_whole(ctx, settings)
    assert audit.verify(ctx).broken_at is None
