"""Dynamic batching: concurrent callers get their own rows, equal to a single session.run, in fewer runs."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest

import inference
from inference.batching import DynamicBatcher
from inference.postprocess import probabilities_for
from inference.types import RunOutput

LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def model() -> tuple[bytes, inference.ModelSpec]:
    data = inference.build_tiny_cnn(input_hw=(32, 32), channels=1, n_classes=len(LABELS), seed=5, filters=8)
    return data, inference.inspect_model(data, LABELS)


def test_concurrent_callers_get_their_own_answers_in_batches(model: tuple[bytes, inference.ModelSpec]) -> None:
    data, spec = model
    cache = inference.SessionCache()
    batcher = DynamicBatcher(max_batch=8, window_s=0.05)
    rng = np.random.default_rng(0)
    images = [rng.random(spec.input.shape(1), dtype=np.float32) for _ in range(24)]
    sizes: list[int] = []
    lock = threading.Lock()

    def runner(xs: np.ndarray, rows: np.ndarray | None) -> RunOutput:
        with lock:
            sizes.append(xs.shape[0])
        time.sleep(0.02)  # a slow model: callers pile up behind a running batch
        return cache.run(spec, xs, rows, model_bytes=data)

    results: dict[int, RunOutput] = {}
    start = threading.Barrier(len(images))

    def call(i: int) -> None:
        start.wait(timeout=10)
        results[i] = batcher.run(spec.sha256, images[i], None, runner)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == list(range(len(images)))
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for i, x in enumerate(images):
        raw = session.run([spec.output_name], {spec.input_name: x})[0]
        single = probabilities_for(spec, raw)
        assert results[i].probabilities.shape == (1, len(LABELS))
        np.testing.assert_allclose(results[i].probabilities, single, atol=1e-5)
    assert sum(sizes) == len(images) and max(sizes) <= 8
    assert len(sizes) < len(images)  # batched: fewer runs than callers
    assert batcher.stats(spec.sha256) == (len(sizes), len(images))


def test_a_lone_caller_does_not_wait_for_the_window() -> None:
    batcher = DynamicBatcher(max_batch=8, window_s=5.0)
    start = time.monotonic()
    out = batcher.run("k", np.ones((1, 2), np.float32), None,
                      lambda xs, rows: RunOutput(probabilities=xs * 2))
    assert time.monotonic() - start < 1.0
    np.testing.assert_array_equal(out.probabilities, [[2.0, 2.0]])


def test_an_announced_caller_is_waited_for_within_the_window() -> None:
    batcher = DynamicBatcher(max_batch=8, window_s=2.0)
    sizes: list[int] = []

    def runner(xs: np.ndarray, rows: np.ndarray | None) -> RunOutput:
        sizes.append(xs.shape[0])
        return RunOutput(probabilities=xs + 1)

    batcher.announce("k")  # a second caller is still decoding its upload
    late: list[RunOutput] = []
    thread = threading.Thread(target=lambda: (time.sleep(0.2), late.append(
        batcher.run("k", np.full((1, 1), 5.0, np.float32), None, runner, announced=True))))
    thread.start()
    first = batcher.run("k", np.zeros((1, 1), np.float32), None, runner)
    thread.join(timeout=10)
    assert sizes == [2]
    assert first.probabilities.tolist() == [[1.0]] and late[0].probabilities.tolist() == [[6.0]]


def test_a_failing_batch_fails_its_callers_and_the_next_batch_runs() -> None:
    batcher = DynamicBatcher(max_batch=4, window_s=0.0)

    def broken(xs: np.ndarray, rows: np.ndarray | None) -> RunOutput:
        raise ValueError("model exploded")

    with pytest.raises(ValueError, match="exploded"):
        batcher.run("k", np.zeros((1, 1), np.float32), None, broken)
    out = batcher.run("k", np.ones((1, 1), np.float32), None, lambda xs, rows: RunOutput(probabilities=xs))
    assert out.probabilities.tolist() == [[1.0]]
    batcher.announce("k")
    batcher.withdraw("k")  # an announced image that never came does not hold the next leader
    start = time.monotonic()
    batcher.run("k", np.ones((1, 1), np.float32), None, lambda xs, rows: RunOutput(probabilities=xs))
    assert time.monotonic() - start < 0.5
