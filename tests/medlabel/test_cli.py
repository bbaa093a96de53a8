"""The CLI: help everywhere, idempotent init, user management, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import text

from db import make_engine
from db.migrate import current_revision, head_revision
from medlabel.cli import cli
from medlabel.settings import Settings
from services.accounts import authenticate
from services.context import AppContext


def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "medlabel.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=timeout)


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _all_commands(command, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", _all_commands(cli), ids=lambda p: " ".join(p) or "medlabel")
def test_every_command_has_help(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help or command.short_help, f"{path} has no help text"


def test_every_command_is_in_the_cli_reference() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    for path in _all_commands(cli):
        if path:
            assert f"medlabel {' '.join(path)}" in docs, path


def _env(tmp_path: Path, url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env["MEDLABEL_DATA_DIR"] = str(tmp_path / "data")
    if url:
        env["MEDLABEL_DATABASE_URL"] = url
    return env


def test_init_is_idempotent_and_users_roundtrip(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = run_cli(["init"], env)
    assert first.returncode == 0, first.stderr
    assert "-> " + head_revision() in first.stdout
    assert "created the installation secret key" in first.stdout
    second = run_cli(["init"], env)
    assert second.returncode == 0 and "secret key" not in second.stdout

    added = run_cli(["users", "add", "rad1", "--role", "reader", "--password-stdin"], env, "pw-from-stdin\n")
    assert added.returncode == 0, added.stderr
    listed = run_cli(["users", "list"], env)
    assert "rad1" in listed.stdout and "reader" in listed.stdout and "pw-from-stdin" not in listed.stdout
    assert run_cli(["users", "disable", "rad1"], env).returncode == 0
    assert "disabled" in run_cli(["users", "list"], env).stdout
    dup = run_cli(["users", "add", "rad1", "--role", "lead", "--password-stdin"], env, "another-pw\n")
    assert dup.returncode == 1
    assert dup.stderr.strip() == "error: user 'rad1' already exists"

    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'data' / 'medlabel.db'}",
                        secret_key_file=tmp_path / "data" / "secret.key")
    ctx = AppContext.from_settings(settings)
    try:
        assert run_cli(["users", "disable", "rad1", "--enable"], env).returncode == 0
        assert run_cli(["users", "passwd", "rad1", "--password-stdin"], env, "changed-pw-1\n").returncode == 0
        assert authenticate(ctx, "rad1", "changed-pw-1").role == "reader"
    finally:
        ctx.close()


def test_password_is_never_an_argument() -> None:
    users = cli.commands["users"]
    assert isinstance(users, click.Group)
    params = {p.name for p in users.commands["add"].params}
    assert "password" not in params


def _assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_init_unreachable_database(tmp_path: Path) -> None:
    result = run_cli(["init"], _env(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:1/none"))
    _assert_one_line_error(result, "cannot connect to the database", "127.0.0.1:1")


def test_init_bad_url(tmp_path: Path) -> None:
    _assert_one_line_error(run_cli(["init"], _env(tmp_path, "not a url")), "not a database URL")


def test_init_unwritable_data_dir(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    env = _env(tmp_path)
    env["MEDLABEL_DATA_DIR"] = str(tmp_path / "file" / "data")
    _assert_one_line_error(run_cli(["init"], env), "data folder is not writable", str(tmp_path / "file"))


def test_init_refuses_a_newer_schema(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert run_cli(["init"], env).returncode == 0
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'medlabel.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff_from_the_future'"))
    result = run_cli(["init"], env)
    _assert_one_line_error(result, "ffff_from_the_future", "upgrade medlabel")
    assert current_revision(engine) == "ffff_from_the_future"  # left untouched
    engine.dispose()


def test_demo_creates_users_and_project_once(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert run_cli(["init"], env).returncode == 0
    first = run_cli(["demo"], env, timeout=420)  # ingest, training and the simulated study: ~25 s of CPU
    assert first.returncode == 0, first.stderr
    assert "created user reader1" in first.stdout and "created project" in first.stdout
    assert "demo already loaded" in run_cli(["demo"], env).stdout
    # The reading projects hold full-size films at their native size (never 28x28 or 64x64 thumbnails);
    # the small PneumoniaMNIST images feed only the active-learning simulation project.
    engine = make_engine(f"sqlite:///{tmp_path / 'data' / 'medlabel.db'}")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT p.name, p.task_type, MIN(MIN(i.width, i.height)), MAX(i.width), COUNT(*) "
                                 "FROM items i JOIN projects p ON p.id = i.project_id "
                                 "WHERE i.deid_status = 'released' GROUP BY p.name, p.task_type")).all()
    sizes = {name: (task, smallest, widest, n) for name, task, smallest, widest, n in rows}
    # (of the 16 Kermany films the text detector holds one back for de-identification review)
    assert sizes["Pneumonia (chest X-ray)"][1] >= 500 and sizes["Pneumonia (chest X-ray)"][3] >= 14
    assert sizes["ChestX-ray14 findings"][1] >= 500 and sizes["ChestX-ray14 findings"][3] >= 14
    assert sizes["Pneumonia active learning (PneumoniaMNIST 28x28)"][2] == 28
    with engine.connect() as conn:
        box_labels = conn.execute(text("SELECT l.name, l.kind FROM labels l JOIN projects p ON p.id = l.project_id "
                                       "WHERE p.task_type = 'boxes'")).all()
    engine.dispose()
    assert ("no finding", "no_finding") in [tuple(r) for r in box_labels]
