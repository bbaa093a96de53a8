"""The ``medlabel`` command line: one click group, thin commands, one error handler.

Every command builds the settings, calls one service (or pure) function and prints its result.
A ``MedlabelError`` becomes one line ``error: ...`` on stderr and exit status 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from medlabel import __version__
from medlabel.commands import acting, app_context, local_only, require
from medlabel.errors import MedlabelError

if TYPE_CHECKING:
    from services.dto import IngestReport

logger = logging.getLogger(__name__)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="medlabel")
@click.option("--as", "as_user", metavar="USER",
              help="Act as this user, with their role and projects (default: the local administrator).")
def cli(as_user: str | None) -> None:
    """medlabel: de-identify, label, verify and learn from medical images.

    Settings come from MEDLABEL_* environment variables (see docs/configuration.md). Commands act as
    the local administrator unless --as names a user (docs/security.md: authorization).
    """


@cli.command()
def init() -> None:
    """Create the data folder and secret key, and bring the database schema up to date.

    Safe to run again: it only upgrades what is missing.
    """
    local_only("medlabel init")
    from medlabel.install import init_installation
    from medlabel.settings import load_settings

    report = init_installation(load_settings())
    before = report.revision_before or "empty"
    click.echo(f"database {report.database}: schema {before} -> {report.revision_after}")
    if report.created_secret:
        click.echo("created the installation secret key (0600)")
    if report.created_reid_key:
        click.echo("created the re-identification key (0600)")
    if report.rekeyed:
        click.echo(f"moved {report.rekeyed} re-identification keys to the re-identification key")
    if report.swept:
        click.echo(f"removed {report.swept} temporary files left in the content store by interrupted writes")
    if report.unreadable_keys:
        click.echo(f"warning: {report.unreadable_keys} re-identification keys open with neither key", err=True)


@cli.command()
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on: this machine only by default; 0.0.0.0 for every interface (the container).")
def serve(port: int, address: str) -> None:
    """Start the portal (Streamlit, headless, usage statistics off)."""
    import importlib.util

    spec = importlib.util.find_spec("portal")  # located, not imported: the CLI never loads Streamlit
    assert spec is not None and spec.origin is not None
    app = Path(spec.origin).resolve().parent / "server.py"  # app.py plus the sign-in cookie routes
    args = [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", address,
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--server.maxUploadSize", "200",
        "--client.toolbarMode", "viewer",
        "--client.showErrorDetails", "none",
        "--theme.base", "light",
        # the address users open: Streamlit would otherwise ask checkip.amazonaws.com for an external IP
        # ("Did not auto detect external IP" offline) when listening on every interface
        "--browser.serverAddress", "localhost" if address in ("0.0.0.0", "::") else address,
    ]
    click.echo(f"medlabel portal on http://localhost:{port}" + ("" if address in ("127.0.0.1", "localhost") else
                                                               f" (listening on {address})"))
    sys.stdout.flush()
    # Streamlit replaces this process (same pid): a stop signal sent to `medlabel serve` reaches the portal
    # itself instead of leaving it running without its parent.
    os.execve(sys.executable, args, os.environ.copy())


@cli.command()
@click.option("--port", default=8502, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on: this machine only by default; 0.0.0.0 for every interface (the container).")
def api(port: int, address: str) -> None:
    """Serve the HTTP API (FastAPI on uvicorn) under /api/v1, docs at /api/v1/docs (docs/api.md)."""
    from api.server import serve

    click.echo(f"medlabel API on http://localhost:{port}/api/v1 (docs: /api/v1/docs)")
    serve(address, port)


@cli.command()
@click.option("--images", default=120, show_default=True, type=click.IntRange(1, 1000),
              help="Images per demo project taken from sample_data/.")
def demo(images: int) -> None:
    """Create the demo users and projects and ingest the sample data (idempotent)."""
    local_only("medlabel demo")
    from services.demo import DEMO_PASSWORD, load_demo

    with app_context() as ctx:
        report = load_demo(ctx, images=images)
    for user in report.users_created:
        click.echo(f"created user {user} (password: {DEMO_PASSWORD})")
    for name in report.projects_created:
        click.echo(f"created project {name!r}")
    for ingest in report.ingested:
        _echo_ingest(ingest, verbose=False)
    if report.model:
        click.echo(report.model)
    if not report.users_created and not report.projects_created:
        click.echo("demo already loaded")


def _echo_ingest(report: IngestReport, verbose: bool = True) -> None:
    from medlabel.text import printable

    if verbose:  # names escaped: a newline in a file name cannot forge a line
        for outcome in report.outcomes:
            if outcome.status == "refused":
                click.echo(printable(f"{outcome.source}: {outcome.reason}"), err=True)
            elif outcome.status != "released":
                click.echo(printable(f"  {outcome.status:<11} {outcome.source}: {outcome.reason}"))
    click.echo(f"{report.project}: {report.count('released')} released, {report.count('quarantined')} quarantined "
               f"for review, {report.count('duplicate')} already present, {report.count('refused')} refused")


@cli.command()
@click.argument("project")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--dates", type=click.Choice(["shift", "remove"]), default="shift", show_default=True,
              help="Shift dates per pseudonymous patient (intervals survive) or remove them.")
@click.option("--keep-patient-characteristics", is_flag=True, help="Keep age, sex, size and weight.")
def ingest(project: str, paths: tuple[str, ...], dates: Literal["shift", "remove"],  # click.Choice checked it
           keep_patient_characteristics: bool) -> None:
    """De-identify files (DICOM or photos; folders recursively) into a project.

    Originals never touch the disk or the database; flagged files are quarantined for review,
    and the exit status is 1 when any file was refused.
    """
    import deid
    from services.ingest import ingest_paths
    from services.projects import project_id

    with app_context() as ctx:
        report = ingest_paths(ctx, project_id(ctx, project), paths, actor=acting(ctx), options=deid.DeidOptions(
            dates=dates, keep_patient_characteristics=keep_patient_characteristics))
    _echo_ingest(report)
    if report.count("refused"):
        raise SystemExit(1)


@cli.command()
@click.argument("project")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "coco"]), default="csv", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, writable=True), help="Output file (default: stdout).")
@click.option("--seed", default=0, show_default=True, help="Seed of the patient-level train/val/test split.")
def export(project: str, fmt: str, out: str | None, seed: int) -> None:
    """Export a project's labels: one row per item, pseudonymous ids only, with a patient-level split."""
    from services.export import export_project
    from services.projects import project_id

    with app_context() as ctx:
        data = export_project(ctx, project_id(ctx, project), fmt, seed=seed, actor=acting(ctx))
    if out:
        tmp = Path(out).with_name(Path(out).name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(out)
        click.echo(f"wrote {out}")
    else:
        click.echo(data.decode(), nl=False)


# --- users -------------------------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Manage user accounts (passwords are read from a prompt or stdin, never from arguments)."""
    require(("admin",), "manage users")


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise MedlabelError("no password on standard input")
        return line.rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(["admin", "lead", "reader", "clinician"]))
@click.option("--name", "display_name", default="", help="Display name.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_add(username: str, role: str, display_name: str, password_stdin: bool) -> None:
    """Add a user with a role."""
    from services.accounts import add_user

    password = _read_password(password_stdin)
    with app_context() as ctx:
        user = add_user(ctx, username, password, role, display_name=display_name)
    click.echo(f"added {user.username} ({user.role})")


@users.command("list")
def users_list() -> None:
    """List users, their roles and whether they are active."""
    from services.accounts import list_users

    with app_context() as ctx:
        rows = list_users(ctx)
    for u in rows:
        state = "active" if u.is_active else "disabled"
        click.echo(f"{u.username:<24} {u.role:<10} {state:<9} {u.display_name}")


@users.command("disable")
@click.argument("username")
@click.option("--enable", is_flag=True, help="Enable the account again instead.")
def users_disable(username: str, enable: bool) -> None:
    """Disable (or with --enable, re-enable) a user's account."""
    from services.accounts import set_active

    with app_context() as ctx:
        user = set_active(ctx, username, enable)
    click.echo(f"{user.username} is now {'active' if user.is_active else 'disabled'}")


@users.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def users_passwd(username: str, password_stdin: bool) -> None:
    """Set a user's password (also clears the failed-login back-off)."""
    from services.accounts import set_password

    password = _read_password(password_stdin)
    with app_context() as ctx:
        set_password(ctx, username, password)
    click.echo(f"password of {username} changed")


# --- backup ------------------------------------------------------------------------------------


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def backup(folder: Path) -> None:
    """Copy the database (a consistent snapshot), the content store and the secret key into FOLDER (new
    or empty; 0700)."""
    local_only("medlabel backup")
    from medlabel.settings import load_settings
    from services.backup import backup as run

    report = run(load_settings(), folder)
    click.echo(f"backed up the database ({report.database}) and {report.blobs} stored files into {report.folder}")


@cli.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
def restore(folder: Path) -> None:
    """Restore a `medlabel backup` FOLDER into an empty data folder (and, for PostgreSQL, an empty database)."""
    local_only("medlabel restore")
    from medlabel.install import restore as run
    from medlabel.settings import load_settings

    report = run(load_settings(), folder)
    click.echo(f"restored the database and {report.blobs} stored files from {report.folder}")


# --- audit -------------------------------------------------------------------------------------


@cli.group()
def audit() -> None:
    """The audit trail (append-only, hash-chained: docs/security.md)."""
    require(("admin",), "verify the audit trail")


@audit.command("verify")
def audit_verify() -> None:
    """Recompute the audit trail's hash chain; print the first broken link (exit status 1) or the last hash."""
    from services.audit import verify

    with app_context() as ctx:
        report = verify(ctx)
    if report.broken_at is not None:
        click.echo(f"audit trail broken at event {report.broken_at} (event {report.events} in order): "
                   f"{report.reason}", err=True)
        raise SystemExit(1)
    click.echo(f"audit trail intact: {report.events} events" + (f", last hash {report.last_hash}"
                                                                 if report.last_hash else ""))


# --- benchmarks ---------------------------------------------------------------------------------


@cli.group()
def bench() -> None:
    """Benchmarks that print JSON (method and figures: docs/benchmarks.md)."""


def _register() -> None:
    """Subcommands that live in their own modules (each imports its heavy dependencies lazily)."""
    from medlabel.benchmarks import agreement as bench_agreement
    from medlabel.benchmarks import al as bench_al
    from medlabel.benchmarks import deid as bench_deid
    from medlabel.benchmarks import queue as bench_queue
    from medlabel.benchmarks import ui as bench_ui
    from medlabel.commands import agreement, deid, models

    for command in (deid.command, agreement.command, models.command, models.prelabel_command):
        cli.add_command(command)
    for command in (bench_deid.command, bench_agreement.command, bench_al.command, bench_queue.command,
                    bench_ui.command):
        bench.add_command(command)
    from medlabel.benchmarks import variants as bench_variants
    from medlabel.commands import quantize

    models.command.add_command(quantize.command)
    models.command.add_command(quantize.evaluate_command)
    bench.add_command(bench_variants.command)
    from medlabel.benchmarks import prelabel as bench_prelabel

    bench.add_command(bench_prelabel.command)
    from medlabel.benchmarks import second_opinion as bench_second_opinion

    bench.add_command(bench_second_opinion.command)
    from medlabel.benchmarks import scale as bench_scale
    from medlabel.commands import jobs as jobs_commands

    cli.add_command(jobs_commands.command)
    bench.add_command(bench_scale.command)
    from medlabel.benchmarks import ingest as bench_ingest
    from medlabel.benchmarks import retrain as bench_retrain

    bench.add_command(bench_retrain.command)
    bench.add_command(bench_ingest.command)
    from medlabel.benchmarks import api as bench_api
    from medlabel.commands import tokens

    cli.add_command(tokens.command)
    from medlabel.commands import deploy, store

    cli.add_command(deploy.command)
    cli.add_command(store.command)
    bench.add_command(bench_api.command)


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning user errors into one line and exit status 1."""
    logging.basicConfig(level=os.environ.get("MEDLABEL_LOG_LEVEL", "WARNING"),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        cli.main(args=argv, prog_name="medlabel", standalone_mode=False)
    except MedlabelError as exc:
        from medlabel.text import printable

        click.echo(f"error: {printable(exc)}", err=True)  # a file name with a newline stays one line
        raise SystemExit(1) from None
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        raise SystemExit(130) from None
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.exceptions.Exit as exc:
        raise SystemExit(exc.exit_code) from None


if __name__ == "__main__":
    main()
