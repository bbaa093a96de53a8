"""`medlabel agreement` on a CSV and on a project's verification round."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agreement import AgreementReport
from medlabel.settings import Settings
from services import labelling, verification
from services.agreement_report import agreement_for_project
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from tests.agreement.test_statistics import KRIPP
from tests.conftest import EnvFor
from tests.services.factories import make_items, make_project, user_id


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    return subprocess.run([sys.executable, "-m", "medlabel.cli", "agreement", *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_csv_json_output(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    lines = ["item,reader,label"] + [f"u{u},{reader},{v}" for reader, values in KRIPP.items()
                                      for u, v in enumerate(values) if v is not None]
    path.write_text("\n".join(lines) + "\n")
    result = _cli(str(path), "--level", "ordinal", "--categories", "1,2,3,4,5", "--boot", "200", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert round(report["krippendorff_alpha"], 3) == 0.815
    assert report["n_items"] == 12 and report["n_readers"] == 4
    assert len(report["pairwise"]) == 6 and set(report["per_category"]) == {"1", "2", "3", "4", "5"}
    lo, hi = report["krippendorff_alpha_ci"]
    assert lo <= report["krippendorff_alpha"] <= hi
    assert "cohen_kappa" not in report  # only with exactly two readers


def test_bad_csv_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("item,reader\n1,A\n")
    result = _cli(str(path), "--json")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {path}: line 1: missing column(s) label "
                                                  "(header must include item,reader,label)"]


def test_project_round_report(ctx: AppContext) -> None:
    pid = make_project(ctx, readers=("rad1", "rad2", "rad3"))
    make_items(ctx, pid, 6)
    rad1 = user_id(ctx, "rad1")
    while (case := labelling.next_case(ctx, pid, rad1)) is not None:
        labelling.submit(ctx, case.assignment_id, rad1, labels=["normal"])
    rnd = verification.create_round(ctx, pid, name="R", readers=["rad2", "rad3"], n=6, seed=0, actor=LOCAL_ADMIN)
    for reader in ("rad2", "rad3"):
        uid = user_id(ctx, reader)
        i = 0
        while (case := verification.next_verification(ctx, uid)) is not None:
            # rad3 disagrees on the last of its six reads only.
            label = "normal" if i % 2 else "pneumonia"
            if reader == "rad3" and i == 5:
                label = "pneumonia"
            verification.submit_verification(ctx, case.assignment_id, uid, labels=[label])
            i += 1
    report = agreement_for_project(ctx, pid, round_id=rnd.id, n_boot=100, actor=LOCAL_ADMIN)
    assert isinstance(report, AgreementReport)
    assert report.n_items == 6 and report.n_readers == 2
    assert abs((report.value("percent_agreement") or 0) - 5 / 6) < 1e-6
    # 2x2 table: both pneumonia 3, rad2 normal / rad3 pneumonia 1, both normal 2 -> po 5/6, pe 1/2 * ... exact:
    po, pe = 5 / 6, (3 / 6) * (4 / 6) + (3 / 6) * (2 / 6)
    assert abs((report.value("cohen_kappa") or 0) - (po - pe) / (1 - pe)) < 1e-6
    everything = agreement_for_project(ctx, pid, n_boot=0, actor=LOCAL_ADMIN)
    assert isinstance(everything, AgreementReport) and everything.n_readers == 3


def test_project_mode_reads_the_database(ctx: AppContext, settings: Settings, env_for: EnvFor) -> None:
    from services.projects import ProjectChanges, project_id, update_project

    pid = make_project(ctx, readers=("rad1", "rad2"))
    make_items(ctx, pid, 4)
    update_project(ctx, project_id(ctx, "Chest"), ProjectChanges(labels_per_item=2), actor=LOCAL_ADMIN)  # both readers read every item
    for reader in ("rad1", "rad2"):
        uid = user_id(ctx, reader)
        while (case := labelling.next_case(ctx, pid, uid)) is not None:
            labelling.submit(ctx, case.assignment_id, uid, labels=["normal" if case.item_id % 2 else "pneumonia"])
    result = subprocess.run([sys.executable, "-m", "medlabel.cli", "agreement", "--project", "Chest", "--boot", "50",
                             "--json"], capture_output=True, text=True, env=env_for(settings), timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["n_items"], report["n_readers"], report["percent_agreement"]) == (4, 2, 1.0)
    assert report["cohen_kappa"] == 1.0
    both = subprocess.run([sys.executable, "-m", "medlabel.cli", "agreement"], capture_output=True, text=True,
                          env=env_for(settings), timeout=120)
    assert both.returncode == 2 and "RATINGS" in both.stderr
