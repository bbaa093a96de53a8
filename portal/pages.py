"""The page registry: which roles may open which page (read top to bottom)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parent / "views"


@dataclass(frozen=True)
class PageDef:
    file: str
    title: str
    icon: str
    url_path: str
    roles: tuple[str, ...]
    section: str


ALL_ROLES = ("admin", "lead", "reader", "clinician")

PAGES: tuple[PageDef, ...] = (
    PageDef("home.py", "Home", ":material/home:", "home", ALL_ROLES, "medlabel"),
    PageDef("label.py", "Label", ":material/label:", "label", ("reader", "lead"), "Reading"),
    PageDef("history.py", "My labels", ":material/history:", "history", ("reader", "lead"), "Reading"),
    PageDef("verify.py", "Verify", ":material/fact_check:", "verify", ("reader", "lead"), "Reading"),
    PageDef("rounds.py", "Verification rounds", ":material/rule:", "rounds", ("lead", "admin"), "Projects"),
    PageDef("adjudicate.py", "Adjudicate", ":material/gavel:", "adjudicate", ("lead", "admin"), "Projects"),
    PageDef("agreement.py", "Agreement", ":material/analytics:", "agreement", ("lead", "admin"), "Projects"),
    PageDef("models.py", "Models", ":material/memory:", "models", ("lead", "admin"), "Projects"),
    PageDef("learning.py", "Active learning", ":material/model_training:", "learning", ("lead", "admin"), "Projects"),
    PageDef("case.py", "Case", ":material/pageview:", "case", ("lead", "admin"), "Projects"),
    PageDef("projects.py", "Projects", ":material/folder_managed:", "projects", ("lead", "admin"), "Projects"),
    PageDef("jobs.py", "Jobs", ":material/pending_actions:", "jobs", ("lead", "admin"), "Projects"),
    PageDef("second_opinion.py", "Second opinion", ":material/stethoscope:", "second-opinion", ("clinician", "admin"),
            "Clinic"),
    PageDef("ingest.py", "Ingest", ":material/upload:", "ingest", ("admin", "lead"), "Intake"),
    PageDef("review.py", "De-identification review", ":material/visibility_lock:", "review", ("admin", "lead"),
            "Intake"),
    PageDef("users.py", "Users", ":material/group:", "users", ("admin",), "Administration"),
    PageDef("audit.py", "Audit log", ":material/policy:", "audit", ("admin",), "Administration"),
    PageDef("tokens.py", "API tokens", ":material/key:", "tokens", ALL_ROLES, "Account"),
)


def pages_for(role: str) -> list[PageDef]:
    return [p for p in PAGES if role in p.roles]
