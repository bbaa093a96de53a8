"""SessionCache: results, shared sessions across threads, LRU eviction by memory, fixed batches, tabular."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from inference import SessionCache, build_tabular_model, build_tiny_cnn, inspect_model, sigmoid
from medlabel.errors import InputError
from tests.inference.graphs import TINY, matmul_logits_model, with_input_dims

RNG = np.random.default_rng(7)


def test_run_matches_a_plain_session_and_returns_embeddings() -> None:
    spec = inspect_model(TINY, ["a", "b"])
    x = RNG.random((5, 1, 28, 28), dtype=np.float32)
    out = SessionCache().run(spec, x, model_bytes=TINY)
    expected = ort.InferenceSession(TINY, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(out.probabilities, expected, atol=1e-6)
    assert out.probabilities.dtype == np.float32 and out.embeddings is not None and out.embeddings.shape == (5, 8)
    assert SessionCache().run(spec, x, model_bytes=TINY, embeddings=False).embeddings is None


def test_logits_get_the_activation_and_matmul_embeddings() -> None:
    model, w, b = matmul_logits_model()
    spec = inspect_model(model, ["x", "y", "z"], {"output": "logits", "multi_label": True})
    x = RNG.random((3, 1, 4, 4), dtype=np.float32)
    out = SessionCache().run(spec, x, model_bytes=model)
    flat = x.reshape(3, 16)
    np.testing.assert_allclose(out.embeddings, flat, atol=1e-7)
    np.testing.assert_allclose(out.probabilities, sigmoid(flat @ w + b), atol=1e-6)


def test_one_session_shared_by_threads() -> None:
    cache = SessionCache()
    spec = inspect_model(TINY, ["a", "b"])
    x = RNG.random((2, 1, 28, 28), dtype=np.float32)
    results: list[np.ndarray] = []
    sessions: list[object] = []
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        sessions.append(cache.session(spec, model_bytes=TINY))
        results.append(cache.run(spec, x, model_bytes=TINY).probabilities)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.loads == 1 and len(results) == 8
    assert all(s is sessions[0] for s in sessions)
    for r in results:
        np.testing.assert_array_equal(r, results[0])


def test_lru_eviction_over_the_memory_budget() -> None:
    models = {name: build_tiny_cnn(seed=seed) for seed, name in enumerate("ABC")}
    specs = {name: inspect_model(data, ["a", "b"]) for name, data in models.items()}
    per_model = int(max(s.size_bytes for s in specs.values()) * 3.0)
    cache = SessionCache(memory_budget=int(per_model * 2.5), memory_factor=3.0, loader=lambda sha: next(
        data for name, data in models.items() if specs[name].sha256 == sha))
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    cache.run(specs["A"], x)
    cache.run(specs["B"], x)
    cache.run(specs["A"], x)  # A is now the most recently used
    cache.run(specs["C"], x)  # over budget: B goes
    assert [sha for sha, _ in cache.loaded()] == [specs["A"].sha256, specs["C"].sha256]
    assert cache.memory_used <= cache.memory_budget and cache.loads == 3
    cache.run(specs["B"], x)  # reloaded; A is now the least recently used and goes
    assert [sha for sha, _ in cache.loaded()] == [specs["C"].sha256, specs["B"].sha256] and cache.loads == 4
    tiny = SessionCache(memory_budget=1)  # a model bigger than the budget is still kept, alone
    tiny.run(specs["A"], x, model_bytes=models["A"])
    assert len(tiny.loaded()) == 1


def test_thread_counts_are_part_of_the_key() -> None:
    cache = SessionCache(intra_op_threads=1)
    spec = inspect_model(TINY, ["a", "b"])
    x = np.zeros((1, 1, 28, 28), dtype=np.float32)
    cache.run(spec, x, model_bytes=TINY)
    cache.run(spec, x, model_bytes=TINY, intra_op_threads=2)  # the batch path's own session
    assert sorted(threads for _, threads in cache.loaded()) == [1, 2]
    with pytest.raises(ValueError):
        SessionCache(intra_op_threads=0)


def test_fixed_batch_models_run_in_chunks() -> None:
    fixed = with_input_dims(TINY, [2, 1, 28, 28])
    spec = inspect_model(fixed, ["a", "b"])
    free = inspect_model(TINY, ["a", "b"])
    x = RNG.random((5, 1, 28, 28), dtype=np.float32)
    cache = SessionCache()
    out = cache.run(spec, x, model_bytes=fixed)
    np.testing.assert_allclose(out.probabilities, cache.run(free, x, model_bytes=TINY).probabilities, atol=1e-6)
    assert out.embeddings is not None and out.embeddings.shape == (5, 8)


def test_tabular_input_changes_the_output() -> None:
    model = build_tabular_model(n_tabular=2)
    spec = inspect_model(model, ["a", "b"], {"tabular_input": "tab",
                                             "features": [{"key": "age", "scale": 0.01}, {"key": "pa"}]})
    cache = SessionCache()
    x = np.full((2, 1, 32, 32), 0.5, dtype=np.float32)
    out = cache.run(spec, x, np.array([[0.2, 0.0], [0.9, 1.0]], dtype=np.float32), model_bytes=model)
    assert out.probabilities.shape == (2, 2) and not np.allclose(out.probabilities[0], out.probabilities[1])
    assert out.embeddings is not None and out.embeddings.shape == (2, 8 + 2)
    np.testing.assert_allclose(out.embeddings[:, -2:], [[0.2, 0.0], [0.9, 1.0]])  # the Gemm input ends with tab
    with pytest.raises(ValueError, match="tabular rows are required"):
        cache.run(spec, x, model_bytes=model)
    with pytest.raises(ValueError, match="the model wants"):
        cache.run(spec, np.zeros((2, 1, 28, 28), np.float32), np.zeros((2, 2), np.float32), model_bytes=model)


def test_model_bytes_must_match_the_spec(tmp_path: Path) -> None:
    spec = inspect_model(TINY, ["a", "b"])
    with pytest.raises(InputError, match="sha256 differs"):
        SessionCache().run(spec, np.zeros((1, 1, 28, 28), np.float32), model_bytes=build_tiny_cnn(seed=5))
    with pytest.raises(ValueError, match="no bytes"):
        SessionCache().run(spec, np.zeros((1, 1, 28, 28), np.float32))
    path = tmp_path / "m.onnx"
    path.write_bytes(TINY)
    from_file = inspect_model(path, ["a", "b"])
    assert SessionCache().run(from_file, np.zeros((1, 1, 28, 28), np.float32)).probabilities.shape == (1, 2)
