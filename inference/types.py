"""The value types of ``inference``: frozen dataclasses and string enums, no behaviour beyond properties."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np


class ImageKind(StrEnum):
    DICOM = "dicom"
    PHOTO = "photo"


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class Scaling(StrEnum):
    """The range pixel values are scaled to before mean/std normalisation."""

    UNIT = "0-1"
    BYTE = "0-255"


class Activation(StrEnum):
    """How class probabilities come from the model output: one-of-C (softmax) or multi-label (sigmoid)."""

    SOFTMAX = "softmax"
    SIGMOID = "sigmoid"


@dataclass(frozen=True)
class WindowPreset:
    name: str
    center: float
    width: float


@dataclass(frozen=True)
class ImageMeta:
    kind: ImageKind
    modality: str | None
    width: int
    height: int
    frames: int
    photometric: str | None  # DICOM PhotometricInterpretation, or the Pillow mode of a photo
    windows: tuple[WindowPreset, ...] = ()  # the file's own VOI windows (Window Center/Width), in order

    @property
    def window(self) -> tuple[float, float] | None:
        """The file's first window as (center, width), or None."""
        return (self.windows[0].center, self.windows[0].width) if self.windows else None


@dataclass(frozen=True)
class RenderedImage:
    png: bytes
    width: int  # of the PNG (display size)
    height: int
    original_width: int
    original_height: int
    frames: int
    window_used: tuple[float, float] | None  # (center, width) applied; None for colour, a VOI LUT table or photos
    modality: str | None
    photometric: str | None

    @property
    def window(self) -> tuple[float, float] | None:  # older name, kept for callers
        return self.window_used


@dataclass(frozen=True)
class Decoded:
    """One frame decoded to display/model units: float32 0..1, HxW (grayscale) or HxWx3 (RGB)."""

    unit: np.ndarray = field(repr=False)
    original_width: int
    original_height: int
    frames: int
    window_used: tuple[float, float] | None
    modality: str | None
    photometric: str | None


@dataclass(frozen=True)
class InputSpec:
    """What a model's image input wants: size, channels, layout and value scaling.

    Pixels go 0..1 (display units, after Modality LUT, VOI LUT / window and MONOCHROME1 inversion),
    then ``scaling`` (x1 or x255), then ``(x - mean) / std`` per channel (mean/std in scaled units).
    """

    height: int
    width: int
    channels: int = 1  # 1 or 3; grayscale images are repeated to 3, RGB converted to luma for 1
    layout: Layout = Layout.NCHW
    scaling: Scaling = Scaling.UNIT
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    # None: the whole image is stretched to height x width; "center": the largest centred region of the
    # model's aspect ratio is kept (as MedMNIST made PneumoniaMNIST from full-size films), then resized
    crop: str | None = None

    def shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        if self.layout is Layout.NCHW:
            return (batch, self.channels, self.height, self.width)
        return (batch, self.height, self.width, self.channels)


@dataclass(frozen=True)
class TabularFeature:
    """One column of a tabular second input, read from item metadata ``key``.

    Numbers: ``value * scale + offset``. ``map``: a lookup for categorical values (e.g. sex M/F).
    ``one_hot``: several columns, one per listed category. ``default`` is used when the key is missing
    (no default: a missing key is an error).
    """

    key: str
    scale: float = 1.0
    offset: float = 0.0
    map: tuple[tuple[str, float], ...] | None = None
    one_hot: tuple[str, ...] | None = None
    default: float | None = None

    @property
    def width(self) -> int:
        return len(self.one_hot) if self.one_hot else 1


@dataclass(frozen=True)
class TabularSpec:
    input_name: str
    features: tuple[TabularFeature, ...]

    @property
    def width(self) -> int:
        return sum(f.width for f in self.features)


@dataclass(frozen=True)
class ModelSpec:
    """A validated ONNX model: identity, input/output semantics, labels, the embedding tensor."""

    sha256: str
    size_bytes: int
    opset: int
    input_name: str
    input: InputSpec
    output_name: str
    activation: Activation
    activation_in_graph: bool  # False: the model outputs logits and postprocess applies ``activation``
    labels: tuple[str, ...]
    tabular: TabularSpec | None = None
    embedding_tensor: str | None = None  # penultimate features (input of the last Gemm/MatMul), if found
    embedding_dim: int | None = None
    fixed_batch: int | None = None  # the model's batch dimension when it is a fixed number (run in chunks)
    source: str | None = None  # the file it was read from, for messages

    @property
    def multi_label(self) -> bool:
        return self.activation is Activation.SIGMOID


@dataclass(frozen=True)
class RunOutput:
    probabilities: np.ndarray = field(repr=False)  # N x C float32
    embeddings: np.ndarray | None = field(default=None, repr=False)  # N x D float32


@dataclass(frozen=True)
class Uncertainty:
    """Per-item uncertainty scores, each N floats, higher = less certain."""

    entropy: np.ndarray  # normalised to 0..1 (single-label: / log C; multi-label: mean binary entropy / log 2)
    margin: np.ndarray  # 1 - (p1 - p2); multi-label: 1 - mean |2p - 1|
    least_confidence: np.ndarray  # 1 - p_max; multi-label: mean (1 - max(p, 1 - p))
