"""One feed from the content store to a model's input tensors (decode, preprocess, tabular features)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import inference
from inference.types import InputSpec, ModelSpec
from medlabel.errors import InputError
from services.context import AppContext


def images(ctx: AppContext, spec: InputSpec, items: Sequence[tuple[int, str]]
           ) -> tuple[list[int], np.ndarray | None, dict[int, str]]:
    """The stored images of ``items`` ((item id, stored path)) decoded and preprocessed for ``spec``: (ids
    that could be fed, their (N, C, H, W) batch or None, failures by item id with the reason)."""
    ids, batch, failed = [], [], {}
    for item_id, path in items:
        try:
            batch.append(inference.preprocess(ctx.store.get(path), spec, name=f"item {item_id}"))
        except (InputError, OSError) as exc:
            failed[item_id] = getattr(exc, "reason", str(exc))
            continue
        ids.append(item_id)
    return ids, (np.concatenate(batch) if batch else None), failed


def tensors(ctx: AppContext, spec: ModelSpec, items: list[tuple[int, str, dict[str, Any]]]
            ) -> tuple[list[int], np.ndarray | None, np.ndarray | None, dict[int, str]]:
    """Preprocessed inputs of the items that can be fed: (ids, images, tabular rows, failures)."""
    rows: dict[int, np.ndarray] = {}
    feedable: list[tuple[int, str]] = []
    failed: dict[int, str] = {}
    for item_id, path, attributes in items:
        if spec.tabular is not None:
            try:
                rows[item_id] = inference.tabular_vector(spec.tabular, attributes)
            except InputError as exc:
                failed[item_id] = exc.reason
                continue
        feedable.append((item_id, path))
    ids, batch, unreadable = images(ctx, spec.input, feedable)
    failed.update(unreadable)
    if not ids:
        return [], None, None, failed
    return ids, batch, (np.concatenate([rows[i] for i in ids]) if rows else None), failed
