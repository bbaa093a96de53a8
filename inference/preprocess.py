"""Model inputs: stored bytes (or an 8-bit rendition of them) to the tensor an ``InputSpec`` asks for.

One path for the batch and the interactive runs:

    bytes --decode at model size (Modality LUT, VOI, MONOCHROME1; photos upright)--> 0..1
          --quantise to 8 bits--> ``model_rendition`` (uint8 HxW or HxWx3, what ingest may keep)
          --``preprocess_array``--> channels, scaling, mean/std, layout, batch axis -> float32 tensor

The image is stretched to the model's height x width (or centre-cropped first: ``InputSpec.crop``),
resized *before* the VOI transform like the display path. Quantising to 8 bits makes ``preprocess(data, spec)`` equal to
``preprocess_array(model_rendition(data, spec), spec)``, so a rendition stored at ingest gives the very
same tensor as decoding the original again; models trained on 8-bit PNG/JPEG exports see what they
were trained on.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.imaging import decode, read_image_meta, to_uint8
from inference.types import InputSpec, Layout, Scaling, TabularSpec
from medlabel.errors import InputError

# ITU-R BT.601 luma, as Pillow's convert("L").
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def model_rendition(data: bytes, spec: InputSpec, *, frame: int = 0, window: tuple[float, float] | None = None,
                    name: str = "<bytes>") -> np.ndarray:
    """The 8-bit image a model sees: ``spec.height`` x ``spec.width``, grayscale HxW or RGB HxWx3.
    With ``spec.crop == "center"`` the image is decoded at a size whose every side covers the model's,
    aspect ratio kept, and the centre is cut out (a centre crop, then the resize, as MedMNIST did)."""
    if spec.crop != "center":
        decoded = decode(data, frame=frame, window=window, size=(spec.height, spec.width), name=name)
        return to_uint8(decoded.unit)
    meta = read_image_meta(data, name)
    h, w = max(meta.height, 1), max(meta.width, 1)
    scale = max(spec.height / h, spec.width / w)
    size = (max(spec.height, round(h * scale)), max(spec.width, round(w * scale)))
    unit = decode(data, frame=frame, window=window, size=size, name=name).unit
    top, left = (size[0] - spec.height) // 2, (size[1] - spec.width) // 2
    return to_uint8(unit[top:top + spec.height, left:left + spec.width])


@functools.lru_cache(maxsize=32)
def _level_table(spec: InputSpec) -> np.ndarray | None:
    """Per channel, the tensor value of each of the 256 levels of an 8-bit rendition (C x 256 float32,
    computed with the very operations of the general path, so looking it up gives the same bits), or
    None when mean/std do not give one value per channel."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    if spec.channels not in (1, 3) or mean.size not in (1, spec.channels) or std.size not in (1, spec.channels):
        return None
    levels = np.arange(256, dtype=np.float32) / np.float32(255.0)
    if spec.scaling is Scaling.BYTE:
        levels = levels * np.float32(255.0)
    table = np.empty((spec.channels, 256), dtype=np.float32)
    for c in range(spec.channels):
        table[c] = (levels - mean[c % mean.size]) / std[c % std.size]
    table.setflags(write=False)
    return table


def _by_table(arr: np.ndarray, spec: InputSpec, table: np.ndarray) -> np.ndarray:
    """``arr`` (HxW grey or HxWx3 colour, uint8) through the level table: one lookup per value, instead of
    float conversion, channel repeat, scaling and normalisation passes over the whole image."""
    out = np.empty(spec.shape(1), dtype=np.float32)
    index = arr.astype(np.intp)  # once, not once per channel inside np.take
    for c in range(spec.channels):
        plane = index if index.ndim == 2 else index[..., c]
        target = out[0, c] if spec.layout is Layout.NCHW else out[0, ..., c]
        np.take(table[c], plane, out=target)
    return out


def preprocess_array(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """An 8-bit rendition (HxW, HxWx1 or HxWx3 uint8, already at the model size) to a 1-item batch."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"expected a uint8 rendition, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.shape[:2] != (spec.height, spec.width):
        raise ValueError(f"rendition is {arr.shape[:2]}, the model wants {(spec.height, spec.width)}")
    colour = arr.ndim == 3 and arr.shape[2] in (3, 4)
    if arr.ndim == 2 or (colour and spec.channels == 3):  # no luma mixing: a table lookup per value
        table = _level_table(spec)
        if table is not None:
            return _by_table(arr if arr.ndim == 2 else arr[..., :3], spec, table)
    unit = arr.astype(np.float32) / np.float32(255.0)
    if unit.ndim == 2:
        unit = unit[..., None]
    if unit.shape[2] == 4:  # RGBA rendition: drop alpha
        unit = unit[..., :3]
    if spec.channels == 3 and unit.shape[2] == 1:
        unit = np.repeat(unit, 3, axis=2)
    elif spec.channels == 1 and unit.shape[2] == 3:
        unit = (unit @ _LUMA)[..., None]
    if spec.scaling is Scaling.BYTE:
        unit = unit * np.float32(255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    unit = (unit - mean) / std  # broadcast over the channel axis (1 or C values)
    if spec.layout is Layout.NCHW:
        unit = unit.transpose(2, 0, 1)
    return np.ascontiguousarray(unit[None], dtype=np.float32)


def preprocess(data: bytes, spec: InputSpec, *, frame: int = 0, window: tuple[float, float] | None = None,
               name: str = "<bytes>") -> np.ndarray:
    """Stored item bytes (DICOM or photo) to a float32 batch of one, shaped ``spec.shape(1)``."""
    return preprocess_array(model_rendition(data, spec, frame=frame, window=window, name=name), spec)


def preprocess_batch(items: Sequence[bytes], spec: InputSpec, *, names: Sequence[str] | None = None) -> np.ndarray:
    """Several items stacked into one batch (N first)."""
    names = names or [f"<item {i}>" for i in range(len(items))]
    if not items:
        return np.zeros(spec.shape(0), dtype=np.float32)
    return np.concatenate([preprocess(d, spec, name=n) for d, n in zip(items, names, strict=True)])


_AGE_UNITS_IN_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def _number(value: Any, key: str) -> float:
    """A number from metadata; a DICOM Age String (``nnnD``, ``nnnW``, ``nnnM``, ``nnnY``, as a retained
    PatientAge arrives) is read as years."""
    text = value.strip() if isinstance(value, str) else None
    if text and len(text) == 4 and text[:3].isdigit() and text[3].upper() in _AGE_UNITS_IN_YEARS:
        return int(text[:3]) * _AGE_UNITS_IN_YEARS[text[3].upper()]
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(None, f"metadata {key!r} is {value!r}, not a number") from None


def tabular_vector(spec: TabularSpec, metadata: Mapping[str, Any]) -> np.ndarray:
    """The tabular second input for one item, 1 x width float32, from its metadata.

    Per feature: ``one_hot`` (1 in the listed category's column, all 0 when unlisted), ``map`` (a
    lookup), else ``value * scale + offset``. A missing (None or absent) value takes ``default``; with
    no default it is an ``InputError``. Unmapped categorical values are errors too.
    """
    row: list[float] = []
    for feature in spec.features:
        value = metadata.get(feature.key)
        if value is None or value == "":
            if feature.default is None:
                raise InputError(None, f"metadata {feature.key!r} is missing and the model has no default for it")
            row.extend([float(feature.default)] * feature.width)
            continue
        if feature.one_hot:
            row.extend(1.0 if str(value) == category else 0.0 for category in feature.one_hot)
        elif feature.map is not None:
            mapping = dict(feature.map)
            if str(value) not in mapping:
                if feature.default is None:
                    raise InputError(None, f"metadata {feature.key!r} is {value!r}, expected one of "
                                           f"{sorted(mapping)}")
                row.append(float(feature.default))
            else:
                row.append(float(mapping[str(value)]))
        else:
            row.append(_number(value, feature.key) * feature.scale + feature.offset)
    return np.asarray([row], dtype=np.float32)
