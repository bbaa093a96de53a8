"""Nothing phones home: a CLI run leaves nothing outside its data folder and destination.

onnxruntime (1.32) writes a device id and queues telemetry under ``$HOME/.cache/Microsoft`` and
``$TMPDIR/.ses`` at import unless ``ORT_DISABLE_TELEMETRY=1`` is set first; medlabel sets it in its
packages' import path (and the Dockerfile), so the commands that load onnxruntime (the text detector in
``deid``, model registration, a pre-labelling job on the embedded Dask cluster) leave both folders empty.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import inference
from medlabel.settings import Settings
from services.context import AppContext
from tests.conftest import EnvFor
from tests.services.factories import make_items, make_project

SAMPLES = Path(__file__).resolve().parents[2] / "sample_data" / "dicom-samples" / "deid-data"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_runs_leave_nothing_in_home_or_tmp(ctx: AppContext, settings: Settings, env_for: EnvFor, tmp_path: Path,
                                               db_url: str) -> None:
    make_items(ctx, make_project(ctx), 4)
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    model = tmp_path / "tiny.onnx"
    model.write_bytes(inference.build_tiny_cnn(input_hw=(28, 28), channels=1, n_classes=2, filters=8))
    env = env_for(settings)
    env.pop("ORT_DISABLE_TELEMETRY", None)  # the package must set it, not the caller
    env.update(HOME=str(home), TMPDIR=str(tmp), MEDLABEL_DASK_WORKERS="1")
    for args in (["deid", str(SAMPLES / "RGB_IMAGE.dcm"), str(tmp_path / "out"), "--key-file",
                  str(settings.secret_key_file)],
                 ["models", "add", str(model), "--name", "tiny", "--labels", "normal,pneumonia"],
                 ["jobs", "submit", "prelabel", "--project", "Chest", "--model", "tiny", "--timeout", "240"]):
        done = subprocess.run([sys.executable, "-m", "medlabel.cli", *args], env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, (args, done.stderr)
    left = sorted(str(p.relative_to(tmp_path)) for p in [*home.rglob("*"), *tmp.rglob("*")])
    assert left == []
