"""Verification rounds: a seeded random sample read blind by several readers, then adjudication.

Blinding: a verification read is served as a case with no suggestions and no reason, and nothing
on that path returns another reader's label or the model's prediction for that item.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from db.base import utcnow
from db.models import (
    AnnotationKind,
    Assignment,
    AssignmentStatus,
    Item,
    Project,
    RoundStatus,
    User,
    VerificationRound,
)
from db.queries import accounts as accounts_q
from db.queries import export as export_q
from db.queries import projects as projects_q
from db.queries import verification as q
from medlabel.errors import ConflictError, InputError, NotFoundError
from services import audit, labelling
from services.consensus import current_reads, final_label
from services.context import AppContext
from services.dto import AdjudicationCase, CaseDTO, PriorRead, RoundDTO
from services.projects import project_dto


def draw_sample(strata: dict[int, str], *, n: int, seed: int, stratified: bool) -> list[int]:
    """Seeded sample of ``n`` item ids; stratified keeps each label's share (largest remainder)."""
    ids = sorted(strata)
    if n > len(ids):
        raise InputError(None, f"asked for {n} items but only {len(ids)} are labelled")
    rng = np.random.default_rng(seed)
    if not stratified:
        return sorted(int(i) for i in rng.choice(ids, size=n, replace=False))
    groups: dict[str, list[int]] = defaultdict(list)
    for item_id in ids:
        groups[strata[item_id]].append(item_id)
    exact = {label: n * len(members) / len(ids) for label, members in groups.items()}
    counts = {label: int(v) for label, v in exact.items()}
    for label in sorted(exact, key=lambda lab: (-(exact[lab] - counts[lab]), lab))[: n - sum(counts.values())]:
        counts[label] += 1
    chosen: list[int] = []
    for label in sorted(groups):
        chosen += [int(i) for i in rng.choice(groups[label], size=counts[label], replace=False)]
    return sorted(chosen)


def create_round(ctx: AppContext, project_name: str, *, name: str, readers: list[str], readers_per_item: int = 2,
                 n: int | None = None, fraction: float | None = None, stratified: bool = False, seed: int = 0,
                 adjudicator: str | None = None, actor_id: int | None = None) -> RoundDTO:
    if (n is None) == (fraction is None):
        raise InputError(None, "give either a number of items or a percentage")
    if readers_per_item < 2:
        raise InputError(None, "a verification round needs at least 2 readers per item")
    with ctx.sessions.begin() as session:
        project = projects_q.project_by_name(session, project_name)
        if project is None:
            raise NotFoundError(f"no project named {project_name!r}")
        reads = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes)
                              for a, u in export_q.annotations_of_project(session, project.id)
                              if a.kind == AnnotationKind.LABEL)
        strata = {item: "|".join(final_label(rs).labels or ("disputed",)) for item, rs in reads.items() if rs}
        size = n if n is not None else max(1, round(len(strata) * float(fraction) / 100))  # type: ignore[arg-type]
        sample = draw_sample(strata, n=size, seed=seed, stratified=stratified)
        pool = {}
        for username in readers:
            user = accounts_q.user_by_name(session, username)
            if user is None:
                raise InputError(None, f"no user named {username!r}")
            pool[username] = user.id
        adjudicator_user = accounts_q.user_by_name(session, adjudicator) if adjudicator else None
        if adjudicator and adjudicator_user is None:
            raise InputError(None, f"no user named {adjudicator!r} to adjudicate")
        rnd = VerificationRound(project_id=project.id, name=name.strip() or f"Round {seed}", seed=seed,
                                sample_size=len(sample), readers_per_item=readers_per_item, stratified=stratified,
                                adjudicator_id=adjudicator_user.id if adjudicator_user else None,
                                created_by_id=actor_id, settings={"fraction": fraction, "readers": sorted(pool)})
        session.add(rnd)
        session.flush()
        load: Counter[str] = Counter({u: 0 for u in pool})
        rng = np.random.default_rng([seed, rnd.id])
        order = rng.permutation(len(sample))
        for index in order:
            item_id = sample[int(index)]
            original = {r.reader for r in reads[item_id]}
            eligible = [u for u in sorted(pool) if u not in original]
            if len(eligible) < readers_per_item:
                raise InputError(None, f"item {item_id} needs {readers_per_item} readers other than its labeller(s) "
                                       f"({', '.join(sorted(original))}); add readers to the round")
            jitter = rng.random(len(eligible))
            picked = sorted(eligible, key=lambda u: (load[u], jitter[eligible.index(u)]))[:readers_per_item]
            for username in picked:
                load[username] += 1
                session.add(Assignment(item_id=item_id, user_id=pool[username], kind=AnnotationKind.VERIFICATION,
                                       round_id=rnd.id, status=AssignmentStatus.CLAIMED, claimed_at=utcnow()))
        audit.record(session, "round.create", actor_id=actor_id, target_type="round", target_id=rnd.id,
                     project=project.name, sample=len(sample), seed=seed, readers_per_item=readers_per_item)
        round_id = rnd.id
    return round_summary(ctx, round_id)


def next_verification(ctx: AppContext, user_id: int, project_id: int | None = None) -> CaseDTO | None:
    """The reader's next blinded verification read: no suggestions, no earlier labels."""
    with ctx.reads() as session:
        claim = q.open_assignment(session, user_id, AnnotationKind.VERIFICATION, project_id)
        if claim is None:
            return None
        item = session.get(Item, claim.item_id)
        assert item is not None
        project = session.get(Project, item.project_id)
        assert project is not None
        return CaseDTO(assignment_id=claim.id, item_id=item.id, project=project_dto(session, project), kind=item.kind,
                       modality=item.modality, width=item.width, height=item.height, frames=item.frame_count,
                       suggestions=(), suggestions_note="Blinded read: no suggestions or earlier labels are shown.")


def submit_verification(ctx: AppContext, assignment_id: int, user_id: int, **kwargs) -> int:  # type: ignore[no-untyped-def]
    """Submit a blinded read; when the item's reads are complete and disagree, queue adjudication."""
    annotation_id = labelling.submit(ctx, assignment_id, user_id, **kwargs)
    with ctx.sessions.begin() as session:
        claim = session.get(Assignment, assignment_id)
        assert claim is not None and claim.round_id is not None
        rnd = session.get(VerificationRound, claim.round_id)
        assert rnd is not None
        if q.count_open(session, rnd.id, AnnotationKind.VERIFICATION, claim.item_id):
            return annotation_id
        labels = {tuple(sorted(a.labels)) for a, _ in q.round_annotations(session, rnd.id)
                  if a.item_id == claim.item_id and a.kind == AnnotationKind.VERIFICATION and not a.retracted}
        if len(labels) > 1 and rnd.adjudicator_id is not None:
            session.add(Assignment(item_id=claim.item_id, user_id=rnd.adjudicator_id, round_id=rnd.id,
                                   kind=AnnotationKind.ADJUDICATION, status=AssignmentStatus.CLAIMED,
                                   claimed_at=utcnow()))
            audit.record(session, "round.disagreement", actor_id=None, target_type="item", target_id=claim.item_id,
                         round_id=rnd.id)
    return annotation_id


def next_adjudication(ctx: AppContext, user_id: int) -> AdjudicationCase | None:
    """The adjudicator's next disputed item with every read (and reader name) of the round."""
    with ctx.reads() as session:
        claim = q.open_assignment(session, user_id, AnnotationKind.ADJUDICATION)
        if claim is None:
            return None
        item = session.get(Item, claim.item_id)
        assert item is not None and claim.round_id is not None
        project = session.get(Project, item.project_id)
        assert project is not None
        reads = [PriorRead(u, tuple(a.labels), a.uncertain, a.comment)
                 for a, u in q.round_annotations(session, claim.round_id)
                 if a.item_id == item.id and a.kind == AnnotationKind.VERIFICATION and not a.retracted]
        return AdjudicationCase(assignment_id=claim.id, item_id=item.id, round_id=claim.round_id,
                                project=project_dto(session, project), reads=tuple(reads), kind=item.kind,
                                modality=item.modality, width=item.width, height=item.height, frames=item.frame_count)


def adjudicate(ctx: AppContext, assignment_id: int, user_id: int, *, labels: list[str], note: str) -> int:
    if not note.strip():
        raise InputError(None, "an adjudication needs a note explaining the decision")
    return labelling.submit(ctx, assignment_id, user_id, labels=labels, comment=note)


def round_summary(ctx: AppContext, round_id: int) -> RoundDTO:
    with ctx.reads() as session:
        rnd = session.get(VerificationRound, round_id)
        if rnd is None:
            raise NotFoundError(f"no verification round {round_id}")
        project = session.get(Project, rnd.project_id)
        assert project is not None
        adjudicator = session.get(User, rnd.adjudicator_id) if rnd.adjudicator_id else None
        assignments = q.round_assignments(session, rnd.id)
        annotations = q.round_annotations(session, rnd.id)
    verification = [(a, u) for a, u in assignments if a.kind == AnnotationKind.VERIFICATION]
    per_reader: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a, u in verification:
        per_reader[u][1] += 1
        per_reader[u][0] += a.status == AssignmentStatus.DONE
    by_item: dict[int, set[tuple[str, ...]]] = defaultdict(set)
    for a, _ in annotations:
        if a.kind == AnnotationKind.VERIFICATION and not a.retracted:
            by_item[a.item_id].add(tuple(sorted(a.labels)))
    adjudicated = {a.item_id for a, _ in annotations if a.kind == AnnotationKind.ADJUDICATION}
    done = sum(1 for a, _ in verification if a.status == AssignmentStatus.DONE)
    return RoundDTO(id=rnd.id, project=project.name, name=rnd.name, seed=rnd.seed, sample_size=rnd.sample_size,
                    readers_per_item=rnd.readers_per_item, stratified=rnd.stratified,
                    adjudicator=adjudicator.username if adjudicator else None, status=rnd.status.value,
                    reads_done=done, reads_total=len(verification),
                    per_reader=tuple((u, d, t) for u, (d, t) in sorted(per_reader.items())),
                    disagreements=sum(1 for s in by_item.values() if len(s) > 1), adjudicated=len(adjudicated),
                    created_at=rnd.created_at)


def rounds(ctx: AppContext, project_name: str) -> list[RoundDTO]:
    with ctx.reads() as session:
        project = projects_q.project_by_name(session, project_name)
        if project is None:
            raise NotFoundError(f"no project named {project_name!r}")
        ids = [r.id for r in q.rounds_of(session, project.id)]
    return [round_summary(ctx, i) for i in ids]


def round_ratings(ctx: AppContext, round_id: int) -> list[tuple[str, str, str]]:
    """Long-format (item, reader, label) of the round's blinded reads, for the agreement statistics."""
    with ctx.reads() as session:
        rows = q.round_annotations(session, round_id)
    reads = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes) for a, u in rows
                          if a.kind == AnnotationKind.VERIFICATION)
    return [(str(item), r.reader, "|".join(r.labels)) for item, rs in sorted(reads.items()) for r in rs]


def close_round(ctx: AppContext, round_id: int, actor_id: int) -> None:
    with ctx.sessions.begin() as session:
        rnd = session.get(VerificationRound, round_id)
        if rnd is None:
            raise NotFoundError(f"no verification round {round_id}")
        if rnd.status == RoundStatus.CLOSED:
            raise ConflictError("this round is already closed")
        rnd.status = RoundStatus.CLOSED
        audit.record(session, "round.close", actor_id=actor_id, target_type="round", target_id=round_id)
