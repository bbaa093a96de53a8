"""Hostile files (tests/hostile.py) in `medlabel deid`, `medlabel ingest`, the ingest service, the second
opinion and `medlabel models add`: each bad file is refused with one line `path: reason` (no traceback, no
original value), the rest goes on, nothing partial is written, the run exits 1, and memory stays bounded."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest

import deid
import inference
from medlabel.errors import InputError
from medlabel.settings import Settings
from services import accounts, second_opinion
from services.authz import LOCAL_ADMIN
from services.context import AppContext
from services.ingest import ingest_paths
from services.models import register_model
from tests import hostile
from tests.conftest import EnvFor
from tests.services.factories import approve, make_project

KEY = b"k" * 32
MAX_RSS_MB = 2500  # "a few GB" at most, for any command on any of these files


def peak_rss_mb(args: list[str], env: dict[str, str]) -> tuple[int, str, str, int]:
    """(exit status, stdout, stderr, peak resident memory in MB) of one `medlabel` process (wait4 gives
    this child's own peak)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([sys.executable, "-m", "medlabel.cli", *args], stdout=out, stderr=err, env=env)
        deadline = time.monotonic() + 300
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                raise TimeoutError(args)
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode(), usage.ru_maxrss // 1024


@pytest.mark.parametrize(("make", "reason"), [
    (lambda: hostile.deflate_bomb(), "inflates to more than its header declares"),
    (lambda: hostile.huge_png(), "over the pixel budget"),
    (lambda: hostile.big_dicom_header(), "over the pixel budget"),
    (lambda: hostile.deep_nesting(2000, True), "nested too deeply"),
    (lambda: hostile.deep_nesting(2000, False), "nested more than 32 levels"),
    (lambda: hostile.deep_nesting(40, True), "nested more than 32 levels"),
    (lambda: hostile.bogus_length(), "declares 1,073,741,824 bytes, past the end of the file"),
    (lambda: hostile.no_pixel_data(), "no pixel data"),
    (lambda: hostile.planted_value(), "cannot be de-identified (ValueError"),
], ids=["deflate-bomb", "png-13000", "dicom-30000", "deep-undefined", "deep-defined", "deep-40", "bogus-length",
        "no-pixel-data", "planted-value"])
def test_the_engine_refuses_each_hostile_file_with_a_reason_naming_no_value(make: Callable[[], bytes], reason: str) -> None:
    data = make()
    started = time.monotonic()
    with pytest.raises(InputError) as caught:
        deid.deidentify_bytes(data, key=KEY, name="hostile.dcm")
    assert time.monotonic() - started < 10
    assert reason in caught.value.reason and "\n" not in caught.value.reason
    assert "PLANTED" not in str(caught.value) and "SECRETNAME" not in str(caught.value)
    if reason != "no pixel data":
        with pytest.raises(InputError):
            deid.check_file(data, "hostile.dcm")


def test_the_pixel_budget_is_a_setting() -> None:
    data = hostile.big_dicom_header(rows=2000, cols=2000)  # 7.6 MiB of pixels (but only 1 KB of data)
    with pytest.raises(InputError, match="over the pixel budget of 4 MiB"):
        deid.deidentify_bytes(data, key=KEY, name="x.dcm", options=deid.DeidOptions(max_pixel_bytes=4 << 20))
    with pytest.raises(InputError, match="cannot decode pixel data"):  # under the budget: decoding finds 1 KB
        deid.deidentify_bytes(data, key=KEY, name="x.dcm")


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env["MEDLABEL_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_deid_cli_refuses_each_hostile_file_in_one_line_and_goes_on(tmp_path: Path) -> None:
    src, outside = tmp_path / "src", tmp_path / "outside"
    expected = hostile.hostile_tree(src, outside)
    key = tmp_path / "provider.key"
    status, out, err, rss = peak_rss_mb(["deid", str(src), str(tmp_path / "dst"), "--key-file", str(key),
                                         "--workers", "1"], _cli_env(tmp_path))
    assert status == 1, err
    assert "Traceback" not in err and "Error:" not in err.replace("error:", "")
    assert "PLANTED" not in out + err and "SECRETNAME" not in out + err
    assert "\x1b" not in out + err and "\x07" not in out + err  # terminal escapes are printed escaped
    lines = err.splitlines()
    refused = {name: reason for name, reason in expected.items() if reason} | {"planted.dcm": "ValueError"}
    for name, reason in refused.items():
        (line,) = [line for line in lines if line.startswith(f"{src / name}: ")]
        assert reason in line, line
    assert not any(line.startswith("released") for line in lines + out.splitlines())  # no forged line
    counted = re.search(r"(\d+) flagged for review", out)
    assert counted is not None, out
    flagged = int(counted.group(1))
    assert f"{len(expected) - len(refused) - flagged} written" in out
    assert len([line for line in lines if line.startswith(str(src))]) == len(refused) + flagged
    manifest = list(csv.DictReader((tmp_path / "dst" / "manifest.csv").read_text().splitlines()))
    assert len(manifest) == len(expected) - len(refused)  # good.dcm and the two oddly named copies
    written = sorted(p for p in (tmp_path / "dst").rglob("*.dcm"))
    assert len(written) == len(manifest) and not list((tmp_path / "dst").rglob(".tmp-*"))
    for path in written:
        assert "PixelData" in pydicom.dcmread(path)
    assert rss < MAX_RSS_MB, rss


def test_ingest_refuses_each_hostile_file_and_stores_the_rest(ctx: AppContext, tmp_path: Path) -> None:
    pid = make_project(ctx)
    src, outside = tmp_path / "src", tmp_path / "outside"
    expected = hostile.hostile_tree(src, outside)
    report = ingest_paths(ctx, pid, [src], actor=LOCAL_ADMIN)
    by_name = {Path(o.source).name: o for o in report.outcomes}
    for name, reason in expected.items():
        if reason:
            assert by_name[name].status == "refused" and reason in by_name[name].reason, (name, by_name[name])
    assert by_name["planted.dcm"].status == "refused" and "PLANTED" not in by_name["planted.dcm"].reason
    stored = [o for o in report.outcomes if o.status in ("released", "quarantined")]
    assert len(stored) == 3  # good.dcm and its two oddly named copies
    assert not any(Path(o.source).is_relative_to(outside) for o in report.outcomes)


def test_ingest_cli_prints_one_escaped_line_per_refusal(settings: Settings, ctx: AppContext, env_for: EnvFor,
                                                       tmp_path: Path) -> None:
    make_project(ctx)
    src = tmp_path / "src"
    src.mkdir()
    (src / hostile.NEWLINE_NAME).write_bytes(hostile.bogus_length())
    (src / "good.dcm").write_bytes(hostile.good_dicom())
    (src / "planted.dcm").write_bytes(hostile.planted_value())
    status, out, err, rss = peak_rss_mb(["ingest", "Chest", str(src)], env_for(settings))
    assert status == 1 and "Traceback" not in err and "PLANTED" not in out + err
    lines = err.splitlines()
    assert f"{src}/forged\\nreleased  all-good.dcm: element (0029,1010) declares 1,073,741,824 bytes" in err
    assert len(lines) == 2 and all(line.startswith(str(src)) for line in lines)
    assert "Chest: 1 released" in out or "Chest: 0 released, 1 quarantined" in out


def test_second_opinion_refuses_an_upload_over_the_budget_before_decoding(ctx: AppContext) -> None:
    doc = accounts.add_user(ctx, "doc", "a-long-password", "clinician").id
    model = register_model(ctx, inference.build_tiny_cnn(input_hw=(32, 32), channels=1, n_classes=2, filters=8),
                           name="tiny", labels=["a", "b"])
    approve(ctx, f"{model.name}:{model.version}")
    for data, reason in ((hostile.huge_png(), "over the pixel budget"),
                         (hostile.deflate_bomb(), "inflates to more than its header declares"),
                         (hostile.deep_nesting(2000), "nested too deeply")):
        started = time.monotonic()
        with pytest.raises(InputError, match=reason):
            second_opinion.ask(ctx, doc, "upload.png", data, f"{model.name}:{model.version}")
        assert time.monotonic() - started < 10
    assert second_opinion.history(ctx, doc) == []  # nothing recorded


def test_models_add_names_a_hostile_file_in_one_escaped_line(settings: Settings, env_for: EnvFor,
                                                            tmp_path: Path) -> None:
    bad = tmp_path / "model\nregistered fine.onnx"
    bad.write_bytes(hostile.huge_png(500))
    status, out, err, _ = peak_rss_mb(["models", "add", str(bad), "--name", "m", "--labels", "a,b"], env_for(settings))
    assert status == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: ") and "model\\nregistered fine.onnx: not an ONNX model" in err
