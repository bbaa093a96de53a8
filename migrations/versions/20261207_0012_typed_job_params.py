"""jobs: stored parameters in the typed form (each kind's JobParams dataclass)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 17:30:00

Job kinds now take one frozen parameters dataclass each (``services.jobs.JobParams``), which names the
project by id (``project_id``) and no longer carries the submitter (``actor_id``: the worker's reporter
knows it). A job written before (queued, or failed and waiting for a retry) stored the project's name as
``project`` and maybe ``actor_id``: such a row would be refused when it runs. This rewrites every stored
job of medlabel's kinds in the new form: ``project`` becomes ``project_id`` (the job row's own project,
else the project of that name; a job whose project no longer exists keeps its name and is refused with a
one-line reason when it runs), and ``actor_id`` is dropped. Downgrade writes the names back.
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = ('ingest', 'export', 'prelabel', 'quantize', 'retrain', 'learn_features')

jobs = sa.table('jobs', sa.column('id', sa.Integer), sa.column('kind', sa.String),
                sa.column('params', sa.JSON), sa.column('project_id', sa.Integer))
projects = sa.table('projects', sa.column('id', sa.Integer), sa.column('name', sa.String))


def _rows(conn: sa.Connection) -> list[Any]:
    return list(conn.execute(sa.select(jobs.c.id, jobs.c.params, jobs.c.project_id).where(jobs.c.kind.in_(KINDS))))


def upgrade() -> None:
    conn = op.get_bind()
    ids = {name: pid for pid, name in conn.execute(sa.select(projects.c.id, projects.c.name))}
    for job_id, params, project_id in _rows(conn):
        if not isinstance(params, dict) or ('project' not in params and 'actor_id' not in params):
            continue
        new = {k: v for k, v in params.items() if k not in ('project', 'actor_id')}
        if 'project' in params:
            pid = project_id if project_id is not None else ids.get(params['project'])
            if pid is None:
                continue  # its project is gone: left as it was, refused with a reason when it runs
            new['project_id'] = pid
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(params=new))


def downgrade() -> None:
    conn = op.get_bind()
    names = dict(conn.execute(sa.select(projects.c.id, projects.c.name)).all())
    for job_id, params, _ in _rows(conn):
        if isinstance(params, dict) and isinstance(params.get('project_id'), int) and params['project_id'] in names:
            old = {k: v for k, v in params.items() if k != 'project_id'}
            old['project'] = names[params['project_id']]
            conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(params=old))
