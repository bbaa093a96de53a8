"""`medlabel bench api`: the HTTP API under 1 and 8 concurrent clients, against raw `session.run`.

Method (figures and discussion in docs/benchmarks.md):

- A throw-away installation (SQLite, local store) with one clinician, a `predict` token and the
  DenseNet-121-shaped model (224x224x3, 14 sigmoid outputs, random weights, built locally; or, with
  ``--model demo``, the demo model) registered through the registry; `medlabel api` started on
  loopback in its own process, as in production.
- Uploads: the typical upload of `bench second-opinion`, 1024x1024 8-bit grayscale PNGs made from the
  real chest X-rays in sample_data (each unique), posted as multipart `POST /api/v1/predictions` with
  httpx. The server decodes the PNG, runs the model (dynamically batched), records the request and
  its audit events, and de-identifies the image in the background.
- ``single_p50_ms``: one client, one request at a time, upload to answer. Each request's background
  image step is awaited (untimed) before the next, so it never overlaps a timed request;
  ``raw_single_p50_ms`` is `session.run` on a ready tensor of the same upload in this process (same
  session options as the server's cache: 1 intra-op thread), measured right after each request.
- ``clients8_images_per_s``: 8 clients (threads, one HTTP connection each) posting ``--per-client``
  uploads each as fast as answers come (bounded by ``--max-seconds``); answered requests over wall
  time. The background de-identification of these uploads runs meanwhile (it is part of the load, at
  a lower CPU priority than the answers, as in production); what is left of it when the last answer
  came is drained afterwards, outside the throughput, and that drain's time is reported as
  ``background_drain_s``.
- ``raw_batch8_images_per_s``: `session.run` on batches of 8 ready tensors in this process, with
  the server idle: the median of ``batch_runs`` runs, half just before the 8-client phase and half
  after its drain, so that both sides of the ratio see the same load; ``throughput_ratio`` =
  clients8 / raw batch-8, from the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from medlabel.benchmarks.second_opinion import MODELS, _model, typical_uploads
from medlabel.values import ref_of


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(settings: Any, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDLABEL_")}
    env.update(MEDLABEL_DATA_DIR=str(settings.data_dir), MEDLABEL_DATABASE_URL=settings.database_url,
               MEDLABEL_SECRET_KEY_FILE=str(settings.secret_key_file), MEDLABEL_API_RATE_LIMIT="100000")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "medlabel.cli", "api", "--port", str(port), "--address",
                                 "127.0.0.1"], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    _stop(proc)
    raise click.ClickException(f"the API did not start: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def run(requests: int = 20, per_client: int = 6, clients: int = 8, warmup: int = 3, batch_runs: int = 6,
        max_seconds: float = 120.0, model_kind: str = "densenet121") -> dict[str, Any]:
    import httpx
    import numpy as np

    import inference
    from medlabel.benchmarks.installation import throwaway_installation
    from services import accounts, api_tokens
    from services.models import cards as model_cards
    from services.models import register_model

    cache = inference.SessionCache()  # the server's options: 1 intra-op thread, no spinning
    with throwaway_installation("medlabel-bench-api-") as ctx:
        accounts.add_user(ctx, "bench-clinician", "bench-password", "clinician")
        secret = api_tokens.create_token(ctx, "bench-clinician", "bench", ("predict", "read")).secret
        onnx_bytes, labels = _model(model_kind, 0)
        model = register_model(ctx, onnx_bytes, name=model_kind, labels=labels)
        ref = ref_of(model.name, model.version)
        lead = accounts.add_user(ctx, "bench-lead", "bench-password", "lead").id
        model_cards.approve(ctx, ref, lead, project_id=None)  # clinicians use approved versions only
        spec = inference.spec_from_dict(model.input_spec)
        session = cache.session(spec, model_bytes=onnx_bytes)
        uploads = typical_uploads(warmup + requests + clients * per_client)
        tensors = {i: inference.preprocess(uploads[i], spec.input) for i in range(warmup, warmup + requests)}
        x8 = np.concatenate([tensors[warmup + (i % requests)] for i in range(8)])
        session.run(None, {spec.input_name: x8})  # warm the batch-8 shapes

        def raw_batch8(runs: int) -> list[float]:
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                session.run(None, {spec.input_name: x8})
                times.append(time.perf_counter() - start)
            return times
        proc, url = _start(ctx.settings, ctx.settings.data_dir / "api.log")
        headers = {"Authorization": f"Bearer {secret}"}
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                def post(i: int, c: httpx.Client = client) -> dict[str, Any]:
                    response = c.post("/predictions", files={"file": (f"upload-{i}.png", uploads[i], "image/png")},
                                      data={"model": ref})
                    if response.status_code != 201:
                        raise click.ClickException(f"request {i}: {response.status_code} {response.text[:300]}")
                    body: dict[str, Any] = response.json()
                    return body

                def settle(answer: dict[str, Any]) -> None:
                    client.get(f"/predictions/{answer['id']}", params={"wait": 30})

                for i in range(warmup):
                    settle(post(i))
                single, raw_single = [], []
                for i in range(warmup, warmup + requests):
                    start = time.perf_counter()
                    answer = post(i)
                    single.append((time.perf_counter() - start) * 1000)
                    settle(answer)
                    start = time.perf_counter()
                    session.run(None, {spec.input_name: tensors[i]})
                    raw_single.append((time.perf_counter() - start) * 1000)

                # raw batch-8 runs bracket the 8-client phase (half just before it, half after the drain, the
                # server idle both times), so that a load that changes meanwhile weighs on both sides alike
                batch_times = raw_batch8(batch_runs // 2)
                first = warmup + requests
                answered: list[int] = []
                ids: list[int] = []
                lock = threading.Lock()
                deadline = time.monotonic() + max_seconds

                def client_loop(c: int) -> None:
                    with httpx.Client(base_url=url, headers=headers, timeout=120) as own:
                        for k in range(per_client):
                            if time.monotonic() > deadline:
                                return
                            answer = post(first + c * per_client + k, own)
                            with lock:
                                answered.append(1)
                                ids.append(answer["id"])

                threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
                start = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(timeout=max_seconds + 60)
                elapsed = time.perf_counter() - start
                clients_rate = len(answered) / elapsed
                start = time.perf_counter()
                for prediction in ids:  # drain the background image steps before the raw batch runs
                    client.get(f"/predictions/{prediction}", params={"wait": 30})
                drain_s = time.perf_counter() - start
        finally:
            _stop(proc)
        batch_times += raw_batch8(batch_runs - batch_runs // 2)
        raw_batch_rate = 8 / (sorted(batch_times)[len(batch_times) // 2])
    single_p50, raw_p50 = _p(single, 0.5), _p(raw_single, 0.5)
    return {
        "model": model_kind,
        "upload": "1024x1024 8-bit grayscale PNG (real chest X-rays)",
        "requests": requests,
        "clients": clients,
        "clients_requests": len(answered),
        "single_p50_ms": single_p50,
        "single_p95_ms": _p(single, 0.95),
        "raw_single_p50_ms": raw_p50,
        "single_ratio": round(single_p50 / raw_p50, 2) if raw_p50 else None,
        "clients8_images_per_s": round(clients_rate, 2),
        "raw_batch8_images_per_s": round(raw_batch_rate, 2),
        "throughput_ratio": round(clients_rate / raw_batch_rate, 2) if raw_batch_rate else None,
        "background_drain_s": round(drain_s, 2),
        "cores": inference.available_cores(),
    }


@click.command("api")
@click.option("--model", "model_kind", type=click.Choice(MODELS), default="densenet121", show_default=True,
              help="DenseNet-121-shaped graph (random weights, built locally) or the demo model.")
@click.option("--requests", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="Timed single-client requests.")
@click.option("--per-client", default=6, show_default=True, type=click.IntRange(1, 1000),
              help="Requests each of the concurrent clients posts.")
@click.option("--clients", default=8, show_default=True, type=click.IntRange(1, 64), help="Concurrent clients.")
@click.option("--max-seconds", default=120.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Bound on the concurrent phase.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def command(model_kind: str, requests: int, per_client: int, clients: int, max_seconds: float,
            as_json: bool) -> None:
    """The API on loopback with the DenseNet-121-shaped model: single-client latency against raw
    session.run, and throughput of concurrent clients (dynamic batching) against raw batch-8 runs."""
    result = run(requests, per_client, clients, max_seconds=max_seconds, model_kind=model_kind)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"single client: p50 {result['single_p50_ms']} ms against raw session.run "
               f"{result['raw_single_p50_ms']} ms (x{result['single_ratio']})")
    click.echo(f"{clients} clients: {result['clients8_images_per_s']} images/s against raw batch-8 "
               f"{result['raw_batch8_images_per_s']} images/s (ratio {result['throughput_ratio']})")
