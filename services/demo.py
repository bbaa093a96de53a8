"""The demo installation: users whose passwords the README states, and a demo project."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from db.queries import accounts as accounts_q
from medlabel.values import ref_of
from services import authz
from services.accounts import add_user
from services.context import AppContext
from services.dto import IngestReport
from services.ingest import ingest_blobs, ingest_paths
from services.projects import LabelSpec, ProjectSpec, create_project, project_exists, project_id

SAMPLE_DATA = Path(__file__).resolve().parents[1] / "sample_data"
NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

DEMO_PASSWORD = "medlabel-demo"
DEMO_USERS = (
    ("admin", "admin", "Demo Admin"),
    ("lead", "lead", "Demo Lead"),
    ("reader1", "reader", "Dr. Reader One"),
    ("reader2", "reader", "Dr. Reader Two"),
    ("reader3", "reader", "Dr. Reader Three"),
    ("clinician", "clinician", "Demo Clinician"),
)
PNEUMONIA_LABELS = (
    LabelSpec("normal", shortcut="1", colour="#2ca02c", code="RID39480"),
    LabelSpec("pneumonia", shortcut="2", colour="#d62728", code="RID5350"),
    LabelSpec("indeterminate", shortcut="3", colour="#7f7f7f", kind="indeterminate"),
    LabelSpec("insufficient quality", shortcut="4", colour="#bcbd22", kind="insufficient_quality"),
)
# The reading projects hold full-resolution films shown at their own size; the 28x28 PneumoniaMNIST
# images, unreadable to a radiologist, only feed the active-learning simulation project.
DEMO_PROJECT = ProjectSpec(
    name="Pneumonia (chest X-ray)",
    task_type="single_label",
    description="Full-resolution paediatric chest X-rays from the Kermany collection.",
    instructions="Label each chest X-ray as normal or pneumonia. Use 'indeterminate' when unsure "
                 "after careful review, and 'insufficient quality' for unreadable images.",
    labels=PNEUMONIA_LABELS,
    second_opinion=True,
    readers=("reader1", "reader2", "reader3"),
)
AL_PROJECT = ProjectSpec(
    name="Pneumonia active learning (PneumoniaMNIST 28x28)",
    task_type="single_label",
    description="Simulation: 28x28 PneumoniaMNIST thumbnails with simulated reads, a finished verification "
                "round and the active-learning loop. Too small to read clinically.",
    instructions="A simulation set: the images are 28x28 thumbnails. Label normal or pneumonia to feed the "
                 "active-learning loop.",
    labels=PNEUMONIA_LABELS,
    second_opinion=True,
    readers=("reader1", "reader2", "reader3"),
)


NIH_PROJECT = ProjectSpec(
    name="ChestX-ray14 findings",
    task_type="multi_label",
    description="Full-resolution chest X-rays (adult CR films and paediatric Kermany films): mark every "
                "ChestX-ray14 finding present.",
    instructions="Select every finding you see (keys shown on the buttons), then press Enter. "
                 "Choose 'No finding' for a normal film.",
    labels=(*(LabelSpec(name.replace("_", " ").lower()) for name in NIH_FINDINGS),
            LabelSpec("no finding", shortcut="0", colour="#2ca02c")),
    second_opinion=True,
    readers=("reader1", "reader2"),
)
NIH_CLINICAL_PROJECT = ProjectSpec(
    name="ChestX-ray14 with clinical data (64x64)",
    task_type="multi_label",
    description="Simulation: 64x64 NIH ChestX-ray14 films of patients the demo's clinical-data model never saw, "
                "each with the patient's age, sex and view position (the data set's labels.csv), read by two "
                "simulated readers. Too small to read clinically.",
    instructions="Select every finding you see, then press Enter. Choose 'No finding' for a normal film.",
    labels=NIH_PROJECT.labels,
    labels_per_item=2,
    readers=("reader1", "reader2"),
)
DICOM_PROJECT = ProjectSpec(
    name="DICOM samples (boxes)",
    task_type="boxes",
    description="Real DICOM files of several modalities; draw a box around each finding or marker.",
    instructions="Draw a box around each abnormality or device. Choose 'no finding' for a normal study and "
                 "'indeterminate' only if it cannot be judged.",
    labels=(LabelSpec("abnormality", shortcut="1", colour="#d62728"), LabelSpec("device", shortcut="2"),
            LabelSpec("no finding", shortcut="0", colour="#2ca02c", kind="no_finding"),
            LabelSpec("indeterminate", shortcut="3", colour="#7f7f7f", kind="indeterminate")),
    readers=("reader1", "reader2"),
)
# Full-resolution chest films among the DICOM samples (adult CR chest PA), read in the multi-label project.
NIH_SAMPLE = "nih-chestxray14-1000"
CLINICAL_HELD_OUT_PATIENTS = 40  # the clinical-data project's patients (about 150 films), never trained on
ADULT_CHEST_DICOMS = ("pydicom-data/RG1_J2KI.dcm",
                      "torchxrayvision/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm")


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


def _pneumoniamnist(data_dir: Path, count: int) -> Iterator[tuple[str, Callable[[], bytes]]]:
    arrays = np.load(data_dir / "pneumoniamnist" / "pneumoniamnist.npz")
    images = arrays["test_images"]
    for i in range(min(count, len(images))):
        yield f"pneumoniamnist-test-{i:04d}.png", partial(_png, images[i])


def _kermany(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "kermany-cxr-samples").glob("*/*.jpeg"))


def _chest_films(data_dir: Path) -> list[Path]:
    """Every full-resolution chest film that ships in sample_data (for the multi-label reading project)."""
    dicoms = [data_dir / "dicom-samples" / name for name in ADULT_CHEST_DICOMS]
    return [p for p in dicoms if p.exists()] + _kermany(data_dir)


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
    ids: dict[str, int] = {}  # project name -> id, of the projects made here
    with ctx.reads() as session:  # the demo lead leads the demo projects (a project with no lead is admins' only)
        lead_id = next((u.id for u in accounts_q.list_users(session) if u.username == "lead"), None)
    for spec in (DEMO_PROJECT, NIH_PROJECT, DICOM_PROJECT, AL_PROJECT, NIH_CLINICAL_PROJECT):
        if not project_exists(ctx, spec.name):
            ids[spec.name] = create_project(ctx, spec, actor_id=lead_id)
            created_projects.append(spec.name)
    reports: list[IngestReport] = []
    if not with_data or not data_dir.exists():
        return DemoReport(tuple(created_users), tuple(created_projects))
    if DEMO_PROJECT.name in created_projects:
        reports.append(ingest_paths(ctx, ids[DEMO_PROJECT.name], _kermany(data_dir), actor=authz.LOCAL_ADMIN))
    if NIH_PROJECT.name in created_projects:
        reports.append(ingest_paths(ctx, ids[NIH_PROJECT.name], _chest_films(data_dir), actor=authz.LOCAL_ADMIN))
    if DICOM_PROJECT.name in created_projects:
        reports.append(ingest_paths(ctx, ids[DICOM_PROJECT.name], sorted((data_dir / "dicom-samples").rglob("*.dcm")),
                                    actor=authz.LOCAL_ADMIN))
    if AL_PROJECT.name in created_projects:
        reports.append(ingest_blobs(ctx, ids[AL_PROJECT.name], _pneumoniamnist(data_dir, images),
                                    actor=authz.LOCAL_ADMIN))
    model_line = ""
    if AL_PROJECT.name in created_projects:
        model_line = _demo_model(ctx, data_dir)
        truth = _truth(data_dir, [r for r in reports if r.project == AL_PROJECT.name])
        model_line += "; " + demo_reads(ctx, ids[AL_PROJECT.name], truth)
        from services.learning import setup_active_learning_demo
        from services.projects import project_id

        model_line += "; " + setup_active_learning_demo(ctx, project_id(ctx, AL_PROJECT.name))
        model_line += "; " + _demo_learning_rounds(ctx, truth)
        model_line += "; " + _demo_fullsize_model(ctx, data_dir)
        model_line += "; " + _approve_for_clinicians(ctx, "pneumonia-fullsize")
        model_line += "; " + _approve_for_clinicians(ctx, "pneumonia-logreg")
    if NIH_CLINICAL_PROJECT.name in created_projects and (data_dir / NIH_SAMPLE).exists():
        from services.demo_clinical import load_clinical_demo

        model_line += "; " + load_clinical_demo(ctx, data_dir / NIH_SAMPLE, NIH_CLINICAL_PROJECT.name, _user_ids(ctx),
                                                held_out=CLINICAL_HELD_OUT_PATIENTS)
    return DemoReport(tuple(created_users), tuple(created_projects), tuple(reports), model_line)


def _truth(data_dir: Path, reports: list[IngestReport]) -> dict[int, str]:
    """Item id -> the source data set's label, to simulate readers in the demo (never stored as a label)."""
    test_labels = np.load(data_dir / "pneumoniamnist" / "pneumoniamnist.npz")["test_labels"].ravel()
    truth = {}
    for report in reports:
        for outcome in report.outcomes:
            if outcome.item_id is None or outcome.status != "released":
                continue
            name = Path(outcome.source)
            if name.name.startswith("pneumoniamnist-test-"):
                truth[outcome.item_id] = "pneumonia" if test_labels[int(name.stem.rsplit("-", 1)[1])] else "normal"
            elif name.parent.name.lower() in ("normal", "pneumonia"):
                truth[outcome.item_id] = name.parent.name.lower()
    return truth


def demo_reads(ctx: AppContext, project_id: int, truth: dict[int, str], *, primary: int = 60, sample: int = 24,
               seed: int = 7) -> str:
    """Simulated reading so the dashboards have data: reader1 labels ``primary`` cases, a finished blinded
    verification round (reader2 and reader3, adjudicated by the lead) over ``sample`` of them, and a
    pending intra-reader re-read round for reader1. Simulated readers err at a fixed, seeded rate."""
    from services import labelling, verification
    from services.projects import projects_for

    users = _user_ids(ctx)
    project = next(p for p in projects_for(ctx, users["lead"], "lead") if p.id == project_id)
    rng = np.random.default_rng(seed)
    flip = {"normal": "pneumonia", "pneumonia": "normal"}

    def read(item_id: int, error_rate: float) -> str:
        label = truth.get(item_id, "indeterminate")
        return flip.get(label, label) if rng.random() < error_rate else label

    labelled = 0
    while labelled < primary and (case := labelling.next_case(ctx, project.id, users["reader1"])) is not None:
        labelling.submit(ctx, case.assignment_id, users["reader1"], labels=[read(case.item_id, 0.08)],
                         time_spent_ms=int(rng.integers(2500, 9000)))
        labelled += 1
    rnd = verification.create_round(ctx, project.id, name="Demo round 1", readers=["reader2", "reader3"],
                                    n=min(sample, labelled), seed=seed, stratified=True, adjudicator="lead",
                                    actor=users["lead"])
    for reader, error_rate in (("reader2", 0.10), ("reader3", 0.15)):
        while (case := verification.next_verification(ctx, users[reader])) is not None:
            verification.submit_verification(ctx, case.assignment_id, users[reader],
                                             labels=[read(case.item_id, error_rate)])
    adjudicated = 0
    while (disputed := verification.next_adjudication(ctx, users["lead"])) is not None:
        verification.adjudicate(ctx, disputed.assignment_id, users["lead"],
                                labels=[truth.get(disputed.item_id, "indeterminate")],
                                note="demo adjudication: reviewed against the source data set's label")
        adjudicated += 1
    verification.close_round(ctx, rnd.id, actor=users["lead"])
    verification.create_reread_round(ctx, project.id, reader="reader1", n=min(10, labelled),
                                     washout_days=14, seed=seed, name="reader1 re-read after 2 weeks",
                                     actor=users["lead"])
    return (f"reader1 labelled {labelled} cases; verification round '{rnd.name}' read blind by reader2 and "
            f"reader3 ({rnd.sample_size} items), {adjudicated} disagreement(s) adjudicated; a re-read round "
            "for reader1 opens in 14 days")


def _demo_learning_rounds(ctx: AppContext, truth: dict[int, str], *, batch: int = 20, seed: int = 5) -> str:
    """Two retrains of the active-learning project, so its learning curve has points measured on project
    labels: one on reader1's labels so far, then one after reader1 reads the next ``batch`` cases in the
    queue's (active-learning) order, erring at the same rate as before."""
    from services import labelling
    from services import learning as active_learning
    from services.projects import projects_for

    users = _user_ids(ctx)
    project = next(p for p in projects_for(ctx, users["lead"], "lead") if p.name == AL_PROJECT.name)
    first = active_learning.retrain(ctx, project.id, actor_id=users["lead"])
    rng = np.random.default_rng(seed)
    flip = {"normal": "pneumonia", "pneumonia": "normal"}
    read = 0
    while read < batch and (case := labelling.next_case(ctx, project.id, users["reader1"])) is not None:
        label = truth.get(case.item_id, "indeterminate")
        labelling.submit(ctx, case.assignment_id, users["reader1"],
                         labels=[flip.get(label, label) if rng.random() < 0.08 else label],
                         time_spent_ms=int(rng.integers(2500, 9000)))
        read += 1
    second = active_learning.retrain(ctx, project.id, actor_id=users["lead"])
    return (f"active-learning retrains: {first.model} on {first.n_labels} labels, then {second.model} on "
            f"{second.n_labels} after reader1 read {read} queued cases")


def _user_ids(ctx: AppContext) -> dict[str, int]:
    with ctx.reads() as session:
        return {u.username: u.id for u in accounts_q.list_users(session)}


def _demo_model(ctx: AppContext, data_dir: Path) -> str:
    """Train, register and run the demo model so Label shows suggestions at once."""
    from services.demo_model import LABELS, train
    from services.models import prelabel, register_model

    trained = train(data_dir / "pneumoniamnist" / "pneumoniamnist.npz")
    model = register_model(ctx, trained.onnx_bytes, name="pneumonia-logreg", labels=list(LABELS),
                           meta={"description": "logistic regression on PneumoniaMNIST train split (28x28)",
                                 "intended_input": "PneumoniaMNIST-style chest X-ray already reduced to 28x28 "
                                                   "pixels (the whole image is stretched to 28x28)",
                                 "training_data": f"PneumoniaMNIST train split ({trained.train_size} paediatric "
                                                  "chest X-rays at 28x28); its test split: AUROC "
                                                  f"{trained.test_auroc:.3f} on {trained.test_size} images"})
    report = prelabel(ctx, project_id(ctx, AL_PROJECT.name), ref_of(model.name, model.version))
    _fit_unusual_input_check(ctx, data_dir, ref_of(model.name, model.version), native_side=(28, 28))
    return (f"model {model.name} v{model.version}: test AUROC {trained.test_auroc:.3f}, accuracy "
            f"{trained.test_accuracy:.3f} on {trained.test_size} held-out images; "
            f"pre-labelled {report.predicted} items")


def _approve_for_clinicians(ctx: AppContext, model_ref: str) -> str:
    """The lead approves the demo's second-opinion model, validated on the verified labels of the 28x28
    simulation project (the images it was made for)."""
    from services.models import cards as model_cards

    card = model_cards.approve(ctx, model_ref, _user_ids(ctx)["lead"], project_id=project_id(ctx, AL_PROJECT.name))
    return f"{card.model} approved for second opinions ({card.validation_line()})"


def _fit_unusual_input_check(ctx: AppContext, data_dir: Path, model_ref: str,
                             native_side: tuple[int, int] | None) -> dict[str, object]:
    """The unusual-input check of a model trained on PneumoniaMNIST: fitted on its train split, calibrated on
    its validation split to a 5 % false-alarm rate (services/models/ood.py)."""
    from services.models import ood

    arrays = np.load(data_dir / "pneumoniamnist" / "pneumoniamnist.npz")
    return ood.fit_on_images(ctx, model_ref, arrays["train_images"], arrays["val_images"],
                             reference_name="PneumoniaMNIST training", native_side=native_side)


def _demo_fullsize_model(ctx: AppContext, data_dir: Path) -> str:
    """The demo's second-opinion model for full-size films (services.demo_model.train_fullsize): registered
    with an honest card, pre-labels the demo project (for similar cases), with its unusual-input check."""
    from services.demo_model import LABELS, train_fullsize
    from services.models import prelabel, register_model

    films = {p: int(p.parent.name.lower() == "pneumonia") for p in (data_dir / "kermany-cxr-samples").glob("*/*.jpeg")}
    trained = train_fullsize(data_dir / "pneumoniamnist" / "pneumoniamnist.npz", films)
    low, high = trained.films_auroc_ci
    meta = {**trained.meta,
            "description": "PCA (50) + logistic regression on PneumoniaMNIST train, fed through a centre crop",
            "intended_input": "Paediatric frontal chest X-ray at any size (DICOM, PNG or JPEG): the centre square "
                              "is cut out and reduced to 28x28, as PneumoniaMNIST was made from the full-size films",
            "training_data": f"PneumoniaMNIST train split: {trained.train_size} paediatric chest X-rays from one "
                             "centre (Guangzhou), centre-cropped and reduced to 28x28. Small and low-resolution: "
                             "fine detail is lost, and no adult, portable or other-centre films were seen",
            "limitations": f"Checked on only {trained.films} full-size films (8 normal, 8 bacterial pneumonia): "
                           f"AUROC {trained.films_auroc:.2f} (95% CI {low:.2f}-{high:.2f}), accuracy "
                           f"{trained.films_accuracy:.2f}; PneumoniaMNIST test AUROC {trained.test_auroc:.3f}. "
                           "Not for clinical use."}
    model = register_model(ctx, trained.onnx_bytes, name="pneumonia-fullsize", labels=list(LABELS), meta=meta)
    ref = ref_of(model.name, model.version)
    report = prelabel(ctx, project_id(ctx, DEMO_PROJECT.name), ref)
    check = _fit_unusual_input_check(ctx, data_dir, ref, native_side=None)
    return (f"model {model.name} v{model.version} for full-size films: AUROC {trained.films_auroc:.3f} on the "
            f"{trained.films} full-size films, {trained.test_auroc:.3f} on PneumoniaMNIST test; pre-labelled "
            f"{report.predicted} items; unusual-input threshold {check['threshold']} "
            f"({check['observed_rate']:.1%} of {check['n_calibration']} validation images flagged)")
