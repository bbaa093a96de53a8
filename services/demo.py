"""The demo installation: users whose passwords the README states, and a demo project."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from db.queries import accounts as accounts_q
from services.accounts import add_user
from services.context import AppContext
from services.dto import IngestReport
from services.ingest import ingest_blobs, ingest_paths
from services.projects import LabelSpec, ProjectSpec, create_project, project_exists

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

DEMO_PASSWORD = "medlabel-demo"
DEMO_USERS = (
    ("admin", "admin", "Demo Admin"),
    ("lead", "lead", "Demo Lead"),
    ("reader1", "reader", "Dr. Reader One"),
    ("reader2", "reader", "Dr. Reader Two"),
    ("clinician", "clinician", "Demo Clinician"),
)
DEMO_PROJECT = ProjectSpec(
    name="Pneumonia (chest X-ray)",
    task_type="single_label",
    description="Paediatric chest X-rays from PneumoniaMNIST and the Kermany collection.",
    instructions="Label each chest X-ray as normal or pneumonia. Use 'indeterminate' when unsure "
                 "after careful review, and 'insufficient quality' for unreadable images.",
    labels=(
        LabelSpec("normal", shortcut="1", colour="#2ca02c", code="RID39480"),
        LabelSpec("pneumonia", shortcut="2", colour="#d62728", code="RID5350"),
        LabelSpec("indeterminate", shortcut="3", colour="#7f7f7f", kind="indeterminate"),
        LabelSpec("insufficient quality", shortcut="4", colour="#bcbd22", kind="insufficient_quality"),
    ),
    readers=("reader1", "reader2"),
)


NIH_PROJECT = ProjectSpec(
    name="ChestX-ray14 findings",
    task_type="multi_label",
    description="NIH ChestX-ray14 sample (64x64): mark every finding present.",
    instructions="Select every finding you see (keys shown on the buttons), then press Enter. "
                 "Choose 'No finding' for a normal film.",
    labels=(*(LabelSpec(name.replace("_", " ").lower(), shortcut=key)
              for name, key in zip(NIH_FINDINGS, "abdefghijklmno", strict=True)),
            LabelSpec("no finding", shortcut="0", colour="#2ca02c")),
    readers=("reader1", "reader2"),
)
DICOM_PROJECT = ProjectSpec(
    name="DICOM samples (boxes)",
    task_type="boxes",
    description="Real DICOM files of several modalities; draw a box around each finding or marker.",
    instructions="Draw a box around each abnormality or device. Use 'indeterminate' if none can be judged.",
    labels=(LabelSpec("abnormality", shortcut="1", colour="#d62728"), LabelSpec("device", shortcut="2"),
            LabelSpec("indeterminate", shortcut="3", colour="#7f7f7f", kind="indeterminate")),
    readers=("reader1", "reader2"),
)


@dataclass(frozen=True)
class DemoReport:
    users_created: tuple[str, ...]
    projects_created: tuple[str, ...]
    ingested: tuple[IngestReport, ...] = ()
    model: str = ""


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _pneumoniamnist(data_dir: Path, count: int) -> Iterator[tuple[str, object]]:
    arrays = np.load(data_dir / "pneumoniamnist" / "pneumoniamnist.npz")
    images = arrays["test_images"]
    for i in range(min(count, len(images))):
        yield f"pneumoniamnist-test-{i:04d}.png", (lambda a=images[i]: _png(a))


def _nih(data_dir: Path, count: int) -> list[Path]:
    root = data_dir / "nih-chestxray14-1000"
    with open(root / "labels.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"] == "test"]
    return [root / r["path"] for r in rows[:count]]


def load_demo(ctx: AppContext, *, data_dir: Path | None = None, images: int = 120,
              with_data: bool = True) -> DemoReport:
    """Create the demo users and projects and ingest the sample data through de-identification.

    Running it again changes nothing (users and projects exist; images are already stored).
    """
    data_dir = data_dir or SAMPLE_DATA
    created_users = []
    with ctx.reads() as session:
        existing = {u.username for u in accounts_q.list_users(session)}
    for username, role, display in DEMO_USERS:
        if username not in existing:
            add_user(ctx, username, DEMO_PASSWORD, role, display_name=display)
            created_users.append(username)
    created_projects = []
    for spec in (DEMO_PROJECT, NIH_PROJECT, DICOM_PROJECT):
        if not project_exists(ctx, spec.name):
            create_project(ctx, spec)
            created_projects.append(spec.name)
    reports: list[IngestReport] = []
    if not with_data:
        return DemoReport(tuple(created_users), tuple(created_projects))
    if DEMO_PROJECT.name in created_projects and data_dir.exists():
        reports.append(ingest_blobs(ctx, DEMO_PROJECT.name, _pneumoniamnist(data_dir, images)))
        photos = sorted((data_dir / "kermany-cxr-samples").glob("*/*.jpeg"))
        reports.append(ingest_paths(ctx, DEMO_PROJECT.name, photos))
    if NIH_PROJECT.name in created_projects and data_dir.exists():
        reports.append(ingest_paths(ctx, NIH_PROJECT.name, _nih(data_dir, images)))
    if DICOM_PROJECT.name in created_projects and data_dir.exists():
        reports.append(ingest_paths(ctx, DICOM_PROJECT.name, sorted((data_dir / "dicom-samples").rglob("*.dcm"))))
    model_line = ""
    if DEMO_PROJECT.name in created_projects and data_dir.exists():
        model_line = _demo_model(ctx, data_dir)
    return DemoReport(tuple(created_users), tuple(created_projects), tuple(reports), model_line)


def _demo_model(ctx: AppContext, data_dir: Path) -> str:
    """Train, register and run the demo model so Label shows suggestions at once."""
    from services.demo_model import LABELS, train
    from services.models import prelabel, register_model

    trained = train(data_dir / "pneumoniamnist" / "pneumoniamnist.npz")
    model = register_model(ctx, trained.onnx_bytes, name="pneumonia-logreg", labels=list(LABELS),
                           meta={"description": "logistic regression on PneumoniaMNIST train split (28x28)"})
    report = prelabel(ctx, DEMO_PROJECT.name, f"{model.name}:{model.version}")
    return (f"model {model.name} v{model.version}: test AUROC {trained.test_auroc:.3f}, accuracy "
            f"{trained.test_accuracy:.3f} on {trained.test_size} held-out images; "
            f"pre-labelled {report.predicted} items")
