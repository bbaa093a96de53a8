"""Verification rounds: a seeded random sample read blind by several readers, then adjudication.

Creating rounds (inter-reader, intra-reader re-reads after a washout, automation bias with two arms),
their sample and assignments, summaries and closing. The reads themselves are in ``reads``.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agreement.consensus import current_reads, final_label
from db.base import utcnow
from db.models import (
    AnnotationKind,
    Assignment,
    AssignmentStatus,
    Project,
    RoundKind,
    RoundStatus,
    User,
    VerificationRound,
)
from db.queries import accounts as accounts_q
from db.queries import export as export_q
from db.queries import projects as projects_q
from db.queries import verification as q
from medlabel.errors import ConflictError, InputError, NotFoundError
from medlabel.values import RoundSettings
from services import audit, authz
from services.audit_events import RoundClosed, RoundCreated
from services.context import AppContext
from services.dto import RoundDTO


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


ARMS = ("suggestions", "blinded")
"""Automation-bias rounds: readers in the first arm see the model's suggestion, the others do not."""


def assign_arms(readers: list[str], seed: int) -> dict[str, str]:
    """Seeded randomisation of readers into the two arms, as balanced as the count allows."""
    order = np.random.default_rng([seed, 7]).permutation(len(readers))
    shuffled = [sorted(readers)[int(i)] for i in order]
    return {reader: ARMS[i % 2] for i, reader in enumerate(shuffled)}


def create_round(ctx: AppContext, project_id: int, *, name: str, readers: list[str], readers_per_item: int = 2,
                 n: int | None = None, fraction: float | None = None, stratified: bool = False, seed: int = 0,
                 adjudicator: str | None = None, actor: authz.ActorRef, item_ids: list[int] | None = None,
                 kind: str = RoundKind.INTER_READER.value) -> RoundDTO:
    """A blinded verification round over a seeded random sample (``n`` items or ``fraction`` percent of
    the labelled items, optionally stratified by current label) or over exactly ``item_ids``.

    ``kind="automation_bias"`` randomises the readers (seeded) into two arms: one sees the model's
    suggestion during its read, the other reads blind; each item is read by both arms where possible.
    """
    actor_id = authz.require_project(ctx, actor, project_id, roles=authz.LEADS).user_id
    round_kind = RoundKind(kind)
    if round_kind == RoundKind.INTRA_READER:
        raise InputError(None, "intra-reader rounds are created with create_reread_round")
    if item_ids is None and (n is None) == (fraction is None):
        raise InputError(None, "give either a number of items or a percentage")
    if readers_per_item < 2:
        raise InputError(None, "a verification round needs at least 2 readers per item")
    if round_kind == RoundKind.AUTOMATION_BIAS and len(readers) < 2:
        raise InputError(None, "an automation-bias round needs readers in both arms (at least 2)")
    with ctx.sessions.begin() as session:
        project = projects_q.require_project_id(session, project_id)
        sample, reads = _sample(session, project, n=n, fraction=fraction, stratified=stratified, seed=seed,
                                item_ids=item_ids)
        if actor_id is not None:
            creator = session.get(User, actor_id)
            if creator is not None and creator.username in readers:
                raise InputError(None, f"{creator.username} creates this round and knows its sample: choose other "
                                       "readers for the blinded reads")
        pool = {}
        for username in readers:
            user = accounts_q.user_by_name(session, username)
            if user is None:
                raise InputError(None, f"no user named {username!r}")
            pool[username] = user.id
        adjudicator_user = accounts_q.user_by_name(session, adjudicator) if adjudicator else None
        if adjudicator and adjudicator_user is None:
            raise InputError(None, f"no user named {adjudicator!r} to adjudicate")
        arms = assign_arms(sorted(pool), seed) if round_kind == RoundKind.AUTOMATION_BIAS else {}
        settings = RoundSettings(fraction=fraction, readers=tuple(sorted(pool)), arms=arms,
                                 explicit_items=item_ids is not None).to_json()
        rnd = VerificationRound(project_id=project.id, name=name.strip() or f"Round {seed}", seed=seed,
                                kind=round_kind, sample_size=len(sample), readers_per_item=readers_per_item,
                                stratified=stratified, adjudicator_id=adjudicator_user.id if adjudicator_user else None,
                                created_by_id=actor_id, settings=settings)
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
            ranked = sorted(eligible, key=lambda u: (load[u], jitter[eligible.index(u)]))
            picked = _balanced_by_arm(ranked, arms, readers_per_item) if arms else ranked[:readers_per_item]
            for username in picked:
                load[username] += 1
                session.add(Assignment(item_id=item_id, user_id=pool[username], kind=AnnotationKind.VERIFICATION,
                                       round_id=rnd.id, status=AssignmentStatus.CLAIMED, claimed_at=utcnow(),
                                       arm=arms.get(username)))
        audit.record(session, RoundCreated(target_id=rnd.id, project=project.name, sample=len(sample), seed=seed,
                                           readers_per_item=readers_per_item, kind=round_kind.value), actor_id=actor_id)
        round_id = rnd.id
    return _round_summary(ctx, round_id)


def _sample(session: Any, project: Project, *, n: int | None, fraction: float | None, stratified: bool, seed: int,
            item_ids: list[int] | None) -> tuple[list[int], dict[int, Any]]:
    """The round's items (seeded draw, or exactly ``item_ids``) and every labelled item's current reads."""
    reads = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes)
                          for a, u in export_q.annotations_of_project(session, project.id)
                          if a.kind == AnnotationKind.LABEL)
    strata = {item: "|".join(final_label(rs).labels or ("disputed",)) for item, rs in reads.items() if rs}
    if item_ids is not None:
        missing = sorted(set(item_ids) - set(strata))
        if missing:
            raise InputError(None, f"item(s) {', '.join(map(str, missing[:10]))} are not labelled items of "
                                   f"project {project.name!r}")
        if not item_ids:
            raise InputError(None, "no items given for the round")
        return sorted(set(item_ids)), reads
    assert n is not None or fraction is not None  # create_round asks for one of them
    size = n if n is not None else max(1, round(len(strata) * float(fraction or 0) / 100))
    return draw_sample(strata, n=size, seed=seed, stratified=stratified), reads


@dataclass(frozen=True)
class RoundCheck:
    """What a round would be, checked before it is created."""

    sample_size: int
    labelled_by: dict[str, int]
    """Reader -> how many sampled items they labelled themselves (they are not given those)."""
    problems: tuple[str, ...]
    """Why the round cannot be created as it stands (empty: it can)."""


def check_round(ctx: AppContext, project_id: int, *, readers: list[str], readers_per_item: int = 2,
                n: int | None = None, fraction: float | None = None, stratified: bool = False, seed: int = 0,
                actor: authz.ActorRef) -> RoundCheck:
    """Draw the sample ``create_round`` would draw and say, before anything is stored, who could read what:
    readers who labelled sampled items, items without enough other readers, the creator among the readers."""
    creator = authz.require_project(ctx, actor, project_id, roles=authz.LEADS).username
    with ctx.reads() as session:
        project = projects_q.require_project_id(session, project_id)
        try:
            sample, reads = _sample(session, project, n=n, fraction=fraction, stratified=stratified, seed=seed,
                                    item_ids=None)
        except InputError as exc:
            return RoundCheck(0, {}, (exc.reason,))
    problems = []
    if creator in readers:
        problems.append(f"{creator} creates this round and knows its sample: choose other readers")
    labelled_by = {r: sum(1 for item in sample if r in {x.reader for x in reads[item]}) for r in readers}
    short = [item for item in sample
             if len([r for r in readers if r not in {x.reader for x in reads[item]}]) < readers_per_item]
    if len(readers) < readers_per_item:
        problems.append(f"choose at least {readers_per_item} readers ({len(readers)} chosen)")
    elif short:
        who = sorted({x.reader for item in short for x in reads[item]})
        problems.append(f"{len(short)} sampled item(s) (e.g. #{short[0]}) were labelled by {', '.join(who)} and "
                        f"would have fewer than {readers_per_item} other readers: add readers or lower the readers "
                        "per item")
    return RoundCheck(len(sample), labelled_by, tuple(problems))


def _balanced_by_arm(ranked: list[str], arms: dict[str, str], k: int) -> list[str]:
    """The ``k`` least-loaded readers, alternating arms so each item is read with and without suggestions."""
    queues = {arm: [u for u in ranked if arms[u] == arm] for arm in ARMS}
    picked: list[str] = []
    turn = 0
    while len(picked) < k and any(queues.values()):
        arm = ARMS[turn % 2]
        if queues[arm]:
            picked.append(queues[arm].pop(0))
        turn += 1
    return picked


def create_reread_round(ctx: AppContext, project_id: int, *, reader: str, n: int, washout_days: float,
                        seed: int = 0, spacing: int = 3, name: str = "", actor: authz.ActorRef,
                        now: dt.datetime | None = None) -> RoundDTO:
    """Intra-reader reliability: re-show a seeded sample of ``n`` of the reader's own labelled cases
    after a washout of ``washout_days``. The re-reads are mixed into the reader's labelling queue (one
    after every ``spacing`` new cases), blinded: no suggestion, no earlier label, no sign that it is a
    re-read. The report compares each re-read with the reader's first read (Cohen's kappa)."""
    actor_id = authz.require_project(ctx, actor, project_id, roles=authz.LEADS).user_id
    if n < 2:
        raise InputError(None, "re-read at least 2 cases")
    if washout_days < 0:
        raise InputError(None, "the washout period cannot be negative")
    if spacing < 0:
        raise InputError(None, "the spacing between re-reads cannot be negative")
    now = now or utcnow()
    with ctx.sessions.begin() as session:
        project = projects_q.require_project_id(session, project_id)
        user = accounts_q.user_by_name(session, reader)
        if user is None:
            raise InputError(None, f"no user named {reader!r}")
        own = sorted({a.item_id for a, u in export_q.annotations_of_project(session, project.id)
                      if a.kind == AnnotationKind.LABEL and u == reader and not a.retracted})
        if n > len(own):
            raise InputError(None, f"{reader} has labelled only {len(own)} item(s) of {project.name!r}; "
                                   f"cannot re-read {n}")
        sample = sorted(int(i) for i in np.random.default_rng(seed).choice(own, size=n, replace=False))
        until = now + dt.timedelta(days=washout_days)
        rnd = VerificationRound(project_id=project.id, name=name.strip() or f"Re-read {reader} ({seed})", seed=seed,
                                kind=RoundKind.INTRA_READER, sample_size=n, readers_per_item=1, stratified=False,
                                created_by_id=actor_id,
                                settings=RoundSettings(reader=reader, washout_days=washout_days, spacing=spacing,
                                                       washout_until=until).to_json())
        session.add(rnd)
        session.flush()
        for item_id in sample:
            session.add(Assignment(item_id=item_id, user_id=user.id, kind=AnnotationKind.REREAD, round_id=rnd.id,
                                   status=AssignmentStatus.CLAIMED, available_at=until))
        audit.record(session, RoundCreated(target_id=rnd.id, project=project.name, sample=n, seed=seed,
                                           kind=RoundKind.INTRA_READER.value, reader=reader,
                                           washout_days=washout_days), actor_id=actor_id)
        round_id = rnd.id
    return _round_summary(ctx, round_id)


def round_summary(ctx: AppContext, round_id: int, *, actor: authz.ActorRef) -> RoundDTO:
    authz.require_round(ctx, actor, round_id)
    return _round_summary(ctx, round_id)


def _round_summary(ctx: AppContext, round_id: int) -> RoundDTO:
    with ctx.reads() as session:
        rnd = session.get(VerificationRound, round_id)
        if rnd is None:
            raise NotFoundError(f"no verification round {round_id}")
        project = session.get(Project, rnd.project_id)
        assert project is not None
        adjudicator = session.get(User, rnd.adjudicator_id) if rnd.adjudicator_id else None
        assignments = q.round_assignments(session, rnd.id)
        annotations = q.round_annotations(session, rnd.id)
        settings = RoundSettings.from_json(rnd.settings)
    verification = [(a, u) for a, u in assignments if a.kind in (AnnotationKind.VERIFICATION, AnnotationKind.REREAD)]
    per_reader: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for a, u in verification:
        per_reader[u][1] += 1
        per_reader[u][0] += a.status == AssignmentStatus.DONE
    by_item: dict[int, set[tuple[str, ...]]] = defaultdict(set)
    for ann, _ in annotations:
        if ann.kind == AnnotationKind.VERIFICATION and not ann.retracted:
            by_item[ann.item_id].add(tuple(sorted(ann.labels)))
    adjudicated = {ann.item_id for ann, _ in annotations if ann.kind == AnnotationKind.ADJUDICATION}
    done = sum(1 for a, _ in verification if a.status == AssignmentStatus.DONE)
    return RoundDTO(id=rnd.id, project=project.name, name=rnd.name, seed=rnd.seed, sample_size=rnd.sample_size,
                    readers_per_item=rnd.readers_per_item, stratified=rnd.stratified,
                    adjudicator=adjudicator.username if adjudicator else None, status=rnd.status.value,
                    reads_done=done, reads_total=len(verification),
                    per_reader=tuple((u, d, t) for u, (d, t) in sorted(per_reader.items())),
                    disagreements=sum(1 for s in by_item.values() if len(s) > 1), adjudicated=len(adjudicated),
                    created_at=rnd.created_at, kind=rnd.kind.value,
                    arms=tuple(sorted(settings.arms.items())), washout_until=settings.washout_until)


def rounds(ctx: AppContext, project_id: int, *, actor: authz.ActorRef) -> list[RoundDTO]:
    """The rounds of project ``project_id``, oldest first (leads of the project and administrators)."""
    authz.require_project(ctx, actor, project_id, roles=authz.LEADS)
    with ctx.reads() as session:
        ids = [r.id for r in q.rounds_of(session, project_id)]
    return [_round_summary(ctx, i) for i in ids]


def round_ratings(ctx: AppContext, round_id: int, *, actor: authz.ActorRef) -> list[tuple[str, str, str]]:
    """Long-format (item, reader, label) of the round's blinded reads, for the agreement statistics."""
    authz.require_round(ctx, actor, round_id)
    with ctx.reads() as session:
        rows = q.round_annotations(session, round_id)
    reads = current_reads((a.item_id, u, a.kind.value, a.labels, a.retracted, a.boxes) for a, u in rows
                          if a.kind == AnnotationKind.VERIFICATION)
    return [(str(item), r.reader, "|".join(r.labels)) for item, rs in sorted(reads.items()) for r in rs]


def close_round(ctx: AppContext, round_id: int, *, actor: authz.ActorRef) -> None:
    actor_id = authz.require_round(ctx, actor, round_id).user_id
    with ctx.sessions.begin() as session:
        rnd = session.get(VerificationRound, round_id)
        if rnd is None:
            raise NotFoundError(f"no verification round {round_id}")
        if rnd.status == RoundStatus.CLOSED:
            raise ConflictError("this round is already closed")
        rnd.status = RoundStatus.CLOSED
        audit.record(session, RoundClosed(target_id=round_id), actor_id=actor_id)


def send_to_verification(ctx: AppContext, project_id: int, item_ids: Sequence[int], readers: Sequence[str],
                         actor: authz.ActorRef, *, adjudicator: str | None = None, name: str | None = None,
                         readers_per_item: int = 2) -> RoundDTO:
    """A verification round over exactly these items (e.g. the suspected label errors of the Active
    learning page), read blind."""
    ids = sorted({int(i) for i in item_ids})
    if not ids:
        raise InputError(None, "choose at least one item to send to verification")
    title = name or f"Suspected label errors ({len(ids)} items)"
    return create_round(ctx, project_id, name=title, readers=list(readers), readers_per_item=readers_per_item,
                        item_ids=ids, adjudicator=adjudicator, actor=actor)
