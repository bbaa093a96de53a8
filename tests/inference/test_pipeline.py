"""The batch input pipeline: order, per-item errors, tensors equal to ``preprocess``, workers 0/1/2."""

from __future__ import annotations

import os
from concurrent.futures import wait
from functools import partial

import numpy as np
import pytest

from inference import InputSpec, Layout, Scaling, TabularFeature, TabularSpec, preprocess, tabular_vector
from inference.pipeline import (
    WORKER_DIED,
    Batch,
    Pipeline,
    PipelineStats,
    Source,
    batches,
    decode_rendition,
    encode_rendition,
    prefetch_window,
    rendition_key,
    shutdown_workers,
)
from medlabel.errors import InputError
from tests.inference.dicoms import make_dicom, png_bytes

SPEC = InputSpec(height=24, width=20, channels=3, layout=Layout.NCHW, scaling=Scaling.UNIT,
                 mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def corpus(n: int, seed: int = 0) -> list[tuple[int, bytes]]:
    """A mix of 16-bit DICOM (rescale + window, some MONOCHROME1), 8-bit grey and RGB PNGs."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        if i % 3 == 0:
            pixels = rng.integers(0, 4096, (70, 60)).astype(np.uint16)
            data = make_dicom(pixels, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=1500, WindowWidth=4000,
                              PhotometricInterpretation="MONOCHROME1" if i % 2 else "MONOCHROME2")
        elif i % 3 == 1:
            data = png_bytes(rng.integers(0, 256, (50, 41)).astype(np.uint8))
        else:
            data = png_bytes(rng.integers(0, 256, (33, 47, 3)).astype(np.uint8))
        items.append((100 + i, data))
    return items


def flatten(out: list[Batch]) -> tuple[list[int], dict[int, np.ndarray], dict[int, str]]:
    ids, tensors, errors = [], {}, {}
    for batch in out:
        assert batch.tensor.shape == SPEC.shape(len(batch.ids)) and batch.tensor.dtype == np.float32
        for row, item_id in enumerate(batch.ids):
            ids.append(item_id)
            tensors[item_id] = batch.tensor[row:row + 1]
        errors.update({e.item_id: e.reason for e in batch.errors})
    return ids, tensors, errors


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_order_ids_and_tensors_equal_preprocess(workers: int) -> None:
    items = corpus(13)
    stats = PipelineStats()
    with Pipeline(items, SPEC, batch_size=4, workers=workers, stats=stats) as pipe:
        out = list(pipe)
    assert [b.size for b in out] == [4, 4, 4, 1]
    ids, tensors, errors = flatten(out)
    assert ids == [i for i, _ in items] and not errors
    for item_id, data in items:
        np.testing.assert_array_equal(tensors[item_id], preprocess(data, SPEC))
    assert (stats.items, stats.batches, stats.failed) == (13, 4, 0)
    assert stats.decode_s > 0 and stats.cache_hits == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_items_are_reported_by_id_and_the_rest_prepared(workers: int) -> None:
    items = corpus(7)
    dicom = items[0][1]
    bad = {3: b"not an image at all", 5: dicom[:400]}  # garbage; a DICOM cut inside its pixel data
    mixed = [(item_id, bad.get(i, data)) for i, (item_id, data) in enumerate(items)]
    out = list(batches(mixed, SPEC, batch_size=3, workers=workers))
    ids, tensors, errors = flatten(out)
    assert ids == [item_id for i, (item_id, _) in enumerate(items) if i not in bad]
    assert set(errors) == {103, 105}
    assert "not a readable image" in errors[103]
    assert errors[105]  # a clear reason, whatever the decoder says
    assert [e.item_id for b in out for e in b.errors] == [103, 105]  # in source order, in their batch
    for item_id, data in items:
        if item_id in tensors:
            np.testing.assert_array_equal(tensors[item_id], preprocess(data, SPEC))


def _raise_input_error(name: str) -> bytes:
    raise InputError(name, "gone from the store")


def _raise_bug() -> bytes:
    raise ZeroDivisionError("boom")


@pytest.mark.parametrize("workers", [0, 1])
def test_loaders_run_in_the_workers_and_their_errors_are_per_item(workers: int) -> None:
    items = corpus(4)
    sources = [Source(items[0][0], partial(bytes, items[0][1])),
               Source(items[1][0], partial(_raise_input_error, "blob x")),
               Source(items[2][0], _raise_bug),
               Source(items[3][0], items[3][1], name="the fourth")]
    out = list(batches(sources, SPEC, batch_size=8, workers=workers))
    ids, tensors, errors = flatten(out)
    assert ids == [items[0][0], items[3][0]]
    assert errors == {items[1][0]: "gone from the store", items[2][0]: "unexpected ZeroDivisionError: boom"}
    np.testing.assert_array_equal(tensors[items[0][0]], preprocess(items[0][1], SPEC))


class DictCache:
    """An in-memory rendition cache (workers=0 / threads only: it is not shared across processes)."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.blobs.get(key)

    def put(self, key: str, data: bytes) -> None:
        self.blobs[key] = data


@pytest.mark.parametrize("executor", ["thread", "inline"])
def test_rendition_cache_gives_the_same_tensors_without_decoding(executor: str) -> None:
    items = corpus(6)
    sources = [Source(item_id, data, cache_key=f"hash-{item_id}") for item_id, data in items]
    cache = DictCache()
    workers = 2 if executor == "thread" else 0
    first, second = PipelineStats(), PipelineStats()
    cold = flatten(list(batches(sources, SPEC, batch_size=4, workers=workers, executor="thread", cache=cache,
                                stats=first)))
    assert first.cache_writes == 6 and first.cache_hits == 0 and len(cache.blobs) == 6
    cache.blobs["hash-101"] = b"corrupt"  # an unreadable cached rendition is decoded again
    warm = flatten(list(batches(sources, SPEC, batch_size=4, workers=workers, executor="thread", cache=cache,
                                stats=second)))
    assert second.cache_hits == 5 and second.cache_writes == 1
    assert cold[0] == warm[0] == [i for i, _ in items]
    for item_id, data in items:
        np.testing.assert_array_equal(warm[1][item_id], preprocess(data, SPEC))
        np.testing.assert_array_equal(cold[1][item_id], warm[1][item_id])


def test_rendition_encoding_round_trip_and_key() -> None:
    image = np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)
    np.testing.assert_array_equal(decode_rendition(encode_rendition(image), SPEC), image)
    assert decode_rendition(encode_rendition(image[:10]), SPEC) is None  # wrong size: decode again
    assert decode_rendition(b"junk", SPEC) is None
    assert rendition_key(SPEC) == rendition_key(InputSpec(24, 20, channels=1)) != rendition_key(InputSpec(24, 24))


def test_tabular_rows_follow_the_items_and_missing_metadata_fails_the_item() -> None:
    tab = TabularSpec("tab", (TabularFeature("age", scale=0.01), TabularFeature("sex", map=(("M", 0.0), ("F", 1.0)))))
    items = corpus(3)
    meta = [{"age": 50, "sex": "F"}, {"sex": "M"}, {"age": 70, "sex": "M"}]
    sources = [Source(i, d, metadata=m) for (i, d), m in zip(items, meta, strict=True)]
    out = list(batches(sources, SPEC, tabular=tab, batch_size=8, workers=0))
    assert out[0].ids == (items[0][0], items[2][0])
    assert out[0].tabular is not None
    np.testing.assert_array_equal(out[0].tabular, np.concatenate([tabular_vector(tab, meta[0]),
                                                                  tabular_vector(tab, meta[2])]))
    assert "'age' is missing" in out[0].errors[0].reason


def _die_on(item_id: int, data: bytes, doomed: int) -> bytes:
    if item_id == doomed:
        os._exit(3)  # what a decoder crash or the out-of-memory killer looks like to the pool
    return data


def test_a_worker_that_dies_costs_only_its_item() -> None:
    items = corpus(9)
    doomed = items[4][0]
    sources = [Source(i, partial(_die_on, i, d, doomed)) for i, d in items]
    stats = PipelineStats()
    out = list(batches(sources, SPEC, batch_size=3, workers=1, executor="process", stats=stats))
    ids, tensors, errors = flatten(out)
    assert ids == [i for i, _ in items if i != doomed]
    assert errors == {doomed: WORKER_DIED}
    assert stats.restarts >= 1
    for item_id, data in items:
        if item_id != doomed:
            np.testing.assert_array_equal(tensors[item_id], preprocess(data, SPEC))


def test_stopping_early_cancels_the_queued_chunks_and_the_workers_are_reused() -> None:
    items = corpus(30)
    pipe = Pipeline(items, SPEC, batch_size=2, workers=2, executor="process")
    with pipe:
        iterator = iter(pipe)
        first = next(iterator)
        queued = [f for _, f in pipe._pending]  # noqa: SLF001 - what leaving must cancel
    assert first.ids == (items[0][0], items[1][0]) and len(queued) == 4
    finished, running = wait([f for f in queued if f is not None], timeout=120)  # cancelled, or run to the end
    assert len(finished) == 4 and not running
    assert not pipe._pending  # noqa: SLF001
    stats = PipelineStats()
    again = list(batches(items, SPEC, batch_size=8, workers=2, executor="process", stats=stats))
    assert [i for b in again for i in b.ids] == [i for i, _ in items] and stats.restarts == 0
    shutdown_workers()  # the next pipeline starts fresh ones
    assert [i for b in batches(items[:3], SPEC, workers=2) for i in b.ids] == [i for i, _ in items[:3]]


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        Pipeline([], SPEC, batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        Pipeline([], SPEC, workers=-1)
    with pytest.raises(ValueError, match="executor"):
        Pipeline([], SPEC, executor="gpu")
    assert list(batches([], SPEC, workers=1)) == []


def test_prefetch_window_holds_about_64_mib_of_prepared_tensors() -> None:
    densenet = InputSpec(height=224, width=224, channels=3)
    assert prefetch_window(densenet, 8, 1) == 13  # 13 chunks of 8 x 3 x 224 x 224 float32 = 62.7 MB
    assert prefetch_window(densenet, 64, 1) == 3  # one chunk is 38.5 MB: workers + 2
    assert prefetch_window(InputSpec(height=28, width=28), 8, 2) == 32  # small inputs: at most 32 chunks
    items = corpus(40)
    pipe = Pipeline(items, SPEC, batch_size=2, workers=1, window=prefetch_window(densenet, 8, 1))
    with pipe:  # entering submits the whole window: the workers decode ahead while the model loads
        assert len(pipe._pending) == 13  # noqa: SLF001
        assert [i for b in pipe for i in b.ids] == [i for i, _ in items]
