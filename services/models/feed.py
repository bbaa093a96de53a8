"""One feed from the content store to a model's input tensors (decode, preprocess, tabular features)."""

from __future__ import annotations

from typing import Any

import numpy as np

import inference
from inference.types import ModelSpec
from medlabel.errors import InputError
from services.context import AppContext


def tensors(ctx: AppContext, spec: ModelSpec, items: list[tuple[int, str, dict[str, Any]]]
             ) -> tuple[list[int], np.ndarray | None, np.ndarray | None, dict[int, str]]:
    """Preprocessed inputs of the items that can be fed: (ids, images, tabular rows, failures)."""
    ids, images, rows, failed = [], [], [], {}
    for item_id, path, attributes in items:
        try:
            x = inference.preprocess(ctx.store.get(path), spec.input, name=f"item {item_id}")
            t = None if spec.tabular is None else inference.tabular_vector(spec.tabular, attributes)
        except (InputError, OSError) as exc:
            failed[item_id] = getattr(exc, "reason", str(exc))
            continue
        ids.append(item_id)
        images.append(x)
        if t is not None:
            rows.append(t)
    if not ids:
        return [], None, None, failed
    return ids, np.concatenate(images), (np.concatenate(rows) if rows else None), failed
