"""The demo as a newcomer runs it: the portal listens on this machine only unless told otherwise, never asks
an outside service for its address, and its page icon needs no network."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NoReturn

import pytest
from click.testing import CliRunner

from medlabel.cli import cli

REPO = Path(__file__).resolve().parents[2]


def _serve_args(monkeypatch: pytest.MonkeyPatch, *extra: str) -> list[str]:
    seen: list[list[str]] = []

    def fake_exec(path: str, args: list[str], env: Any) -> NoReturn:  # the process edge: capture, start nothing
        assert path == args[0]
        seen.append(args)
        raise SystemExit(0)

    monkeypatch.setattr(os, "execve", fake_exec)
    result = CliRunner().invoke(cli, ["serve", "--port", "8599", *extra])
    assert result.exit_code == 0, result.output
    return seen[0]


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_serve_listens_on_localhost_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _serve_args(monkeypatch)
    assert _option(args, "--server.address") == "127.0.0.1"
    assert _option(args, "--browser.serverAddress") == "127.0.0.1"


def test_every_interface_only_when_asked_and_without_an_external_ip_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    args = _serve_args(monkeypatch, "--address", "0.0.0.0")
    assert _option(args, "--server.address") == "0.0.0.0"
    # set explicitly, Streamlit prints this address instead of asking checkip.amazonaws.com
    assert _option(args, "--browser.serverAddress") == "localhost"


def test_page_icon_is_local() -> None:
    for page in (REPO / "portal").rglob("*.py"):
        text = page.read_text()
        assert 'page_icon=":material' not in text, f"{page}: a :material: page icon is fetched from fonts.gstatic.com"


def test_a_stop_signal_to_serve_stops_the_portal(tmp_path: Path) -> None:
    """`medlabel serve` becomes the portal process: SIGTERM to its pid (systemd, a shell's kill) stops
    Streamlit, instead of ending the CLI and leaving the portal serving without a parent."""
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    from tests.browser.conftest import wait_until

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "MEDLABEL_DATA_DIR": str(tmp_path / "data")}
    env.pop("MEDLABEL_DATABASE_URL", None)
    health = f"http://127.0.0.1:{port}/_stcore/health"

    def up() -> bool:
        try:
            return bool(urllib.request.urlopen(health, timeout=1).read() == b"ok")
        except OSError:
            return False

    with open(tmp_path / "serve.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "medlabel.cli", "serve", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_until(lambda: up() or proc.poll() is not None, timeout_s=60) and up(), (
            (tmp_path / "serve.log").read_text())
        os.kill(proc.pid, signal.SIGTERM)  # the pid `medlabel serve` was started as, not its group
        proc.wait(timeout=30)
        assert wait_until(lambda: not up(), timeout_s=10), "the portal still serves after `medlabel serve` was stopped"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of what this test started
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
