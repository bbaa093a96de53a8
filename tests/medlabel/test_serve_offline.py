"""The demo as a newcomer runs it: the portal listens on this machine only unless told otherwise, never asks
an outside service for its address, and its page icon needs no network."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from medlabel.cli import cli

REPO = Path(__file__).resolve().parents[2]


def _serve_args(monkeypatch: pytest.MonkeyPatch, *extra: str) -> list[str]:
    seen: list[list[str]] = []

    def fake_call(args: list[str], **_: Any) -> int:  # the process edge: capture instead of starting Streamlit
        seen.append(args)
        return 0

    monkeypatch.setattr(subprocess, "call", fake_call)
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
