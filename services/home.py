"""The home pages: who is signed in and the projects with their counts; for readers their queues, for
leads and admins what needs attention (rounds waiting, disagreements to adjudicate, jobs, quarantine)."""

from __future__ import annotations

from dataclasses import dataclass

from db.base import utcnow
from db.models import AnnotationKind
from db.queries import home as home_q
from db.queries import labelling as labelling_q
from db.queries import projects as q
from services import authz
from services.accounts import get_user
from services.context import AppContext
from services.dto import HomeSummary, ProjectSummary, RoundDTO
from services.jobs import JobDTO, list_jobs
from services.verification.rounds import _round_summary

RECENT_JOBS = 50  # jobs looked at for failures and running work


@dataclass(frozen=True)
class ReaderQueue:
    """One of a reader's projects: cases left to label and blinded reads waiting."""

    project: str
    project_id: int
    task_type: str
    to_label: int
    to_verify: int


@dataclass(frozen=True)
class Attention:
    """What a lead or admin should look at now."""

    to_adjudicate: int  # disagreements waiting for this user's final label
    rounds: tuple[RoundDTO, ...]  # open rounds with reads or adjudications outstanding
    failed_jobs: tuple[JobDTO, ...]
    running_jobs: tuple[JobDTO, ...]
    quarantined: int  # items waiting on the de-identification review


def home_summary(ctx: AppContext, user_id: int) -> HomeSummary:
    user = get_user(ctx, user_id)
    with ctx.reads() as session:
        rows = q.project_counts(session)
    projects = tuple(
        ProjectSummary(id=p.id, name=p.name, task_type=p.task_type.value, items=items, released=released,
                       quarantined=quarantined, labelled=labelled)
        for p, items, released, quarantined, labelled in rows
    )
    return HomeSummary(user=user, projects=projects)


def reader_queues(ctx: AppContext, user_id: int) -> tuple[ReaderQueue, ...]:
    """The reader's assigned projects (name order), each with cases left to label and reads to verify."""
    with ctx.reads() as session:
        now = utcnow()
        verify = home_q.open_claims(session, user_id, AnnotationKind.VERIFICATION, now)
        projects = q.projects_of_reader(session, user_id)
        return tuple(ReaderQueue(project=p.name, project_id=p.id, task_type=p.task_type.value,
                                 to_label=labelling_q.remaining_for(session, p.id, user_id, p.labels_per_item, now),
                                 to_verify=verify.get(p.id, 0)) for p in projects)


def attention(ctx: AppContext, user_id: int) -> Attention:
    """Open rounds with work outstanding, the user's adjudications, failed and running jobs, quarantine."""
    with ctx.reads() as session:
        to_adjudicate = sum(home_q.open_claims(session, user_id, AnnotationKind.ADJUDICATION, utcnow()).values())
        open_rounds = [(r.id, r.project_id) for r in home_q.open_rounds(session)]
        counts = [(row[0].id, row[3]) for row in q.project_counts(session)]
    visible = authz.visible_project_ids(ctx, user_id, [pid for pid, _ in counts])  # the lead's projects only
    quarantined = sum(n for pid, n in counts if pid in visible)
    rounds = tuple(r for r in (_round_summary(ctx, i) for i, pid in open_rounds if pid in visible)
                   if r.reads_done < r.reads_total or r.adjudicated < r.disagreements)
    jobs = list_jobs(ctx, limit=RECENT_JOBS, actor=user_id)
    return Attention(to_adjudicate=to_adjudicate, rounds=rounds,
                     failed_jobs=tuple(j for j in jobs if j.state == "failed"),
                     running_jobs=tuple(j for j in jobs if j.state in ("queued", "running")),
                     quarantined=quarantined)
