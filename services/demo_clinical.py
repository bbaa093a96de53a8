"""The demo's images with clinical data: NIH ChestX-ray14 sample films with age, sex and view position, a
model with a second (clinical) input trained on other patients, and two simulated readers (docs/models.md,
"Images with clinical data")."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medlabel.values import ref_of
from services import authz
from services.context import AppContext
from services.ingest import ingest_paths
from services.projects import project_id


def load_clinical_demo(ctx: AppContext, nih_dir: Path, project_name: str, users: dict[str, int], *,
                       held_out: int) -> str:
    """Images with clinical data: the NIH sample's films of ``held_out`` patients go into the (multi-label,
    two reads per item) project ``project_name`` with their age, sex and view position (imported from
    labels.csv as item metadata); a model with a second, clinical input (services.demo_model.train_clinical)
    is trained on the other patients, registered and run on the project; two simulated readers read every
    film, so the Models page can compare its AUROC with and without the clinical input on verified labels."""
    from services.demo_model import clinical_records, held_out_patients, train_clinical
    from services.models import prelabel, register_model

    records = clinical_records(nih_dir)
    patients = held_out_patients(records, held_out)
    project_records = {str(r.path): r for r in records if r.patient in patients}
    pid = project_id(ctx, project_name)  # the demo loader is an edge: the name is resolved once, here
    report = ingest_paths(ctx, pid, sorted(project_records), actor=authz.LOCAL_ADMIN)
    items = {o.item_id: project_records[o.source] for o in report.outcomes
             if o.item_id is not None and o.status == "released"}
    _import_clinical_data(ctx, {item_id: r.attributes for item_id, r in items.items()})
    trained = train_clinical(records, patients)
    meta = {**trained.meta,
            "description": "patch k-means image features (learnt without labels) + age, sex and view position, "
                           "one logistic head per finding, in one ONNX graph with two inputs",
            "intended_input": "Frontal adult chest X-ray reduced to 64x64, with the patient's age (years), sex "
                              "(M/F) and view position (PA/AP) as item metadata",
            "training_data": f"NIH ChestX-ray14 sample (64x64): {trained.train_size} films of "
                             f"{trained.train_patients} patients; the {len(patients)} patients of the demo project "
                             "were held out",
            "limitations": "Tiny training set and noisy text-mined labels; 64x64 pixels lose fine detail. The "
                           "Models page shows what the clinical data adds. Not for clinical use."}
    model = register_model(ctx, trained.onnx_bytes, name="chestxray14-clinical", labels=list(trained.labels),
                           meta=meta)
    predicted = prelabel(ctx, pid, ref_of(model.name, model.version)).predicted
    reads = _clinical_reads(ctx, pid, users, {item_id: r.findings for item_id, r in items.items()})
    return (f"model {model.name} v{model.version} (image + age, sex, view position) trained on "
            f"{trained.train_size} films, pre-labelled {predicted} of {len(items)} films of {len(patients)} other "
            f"patients; {reads}")


def _import_clinical_data(ctx: AppContext, attributes: dict[int, dict[str, object]]) -> None:
    """Item metadata from the data set's CSV (as a site imports its clinical data): the keys a model's
    tabular ``features`` read."""
    from db.models import Item

    with ctx.sessions.begin() as session:
        for item_id, values in attributes.items():
            item = session.get(Item, item_id)
            if item is not None:
                item.attributes = {**(item.attributes or {}), **values}


def _clinical_reads(ctx: AppContext, project_id: int, users: dict[str, int], truth: dict[int, tuple[str, ...]],
                    *, seed: int = 11) -> str:
    """reader1 and reader2 each read every film of the clinical-data project (two reads per item: agreeing
    reads are its verified consensus). A simulated reader reports the data set's findings, and at a fixed,
    seeded rate drops one (or calls a single finding normal, or a normal film 'infiltration')."""
    from services import labelling

    rng = np.random.default_rng(seed)

    def read(findings: tuple[str, ...], error_rate: float) -> list[str]:
        if rng.random() >= error_rate:
            return list(findings)
        if findings == ("no finding",):
            return ["infiltration"]
        return list(findings[:-1]) if len(findings) > 1 else ["no finding"]

    done = {}
    for reader, error_rate in (("reader1", 0.08), ("reader2", 0.10)):
        n = 0
        while (case := labelling.next_case(ctx, project_id, users[reader])) is not None:
            labelling.submit(ctx, case.assignment_id, users[reader],
                             labels=read(truth.get(case.item_id, ("no finding",)), error_rate),
                             time_spent_ms=int(rng.integers(3000, 12000)))
            n += 1
        done[reader] = n
    return f"reader1 read {done['reader1']} and reader2 {done['reader2']} of its films"
