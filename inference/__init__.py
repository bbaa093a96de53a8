"""Images to pixels and tensors, and the embedded ONNX models (CPU onnxruntime).

Pure apart from ``inference.runtime`` (the only module running onnxruntime sessions; ``inference.quantize``
imports ``onnxruntime.quantization`` inside its functions) and
``inference.registry`` (reads and validates .onnx files). See docs/inference.md.
"""

import os

# Nothing phones home: onnxruntime (here and under rapidocr) writes a device id and queues telemetry
# under $HOME/.cache/Microsoft and $TMPDIR/.ses on import unless this is set first (docs/security.md).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from inference.batching import DynamicBatcher, default_batcher
from inference.display import (
    CT_WINDOW_PRESETS,
    View,
    WindowOptions,
    crop_view,
    original_to_shown,
    read_meta,
    render_png,
    shown_to_original,
    statistics_window,
    view_rect,
    view_size,
    window_options,
    window_presets,
)
from inference.heatmap import border_share, legend_png, occlusion_drops, occlusion_map, overlay_png
from inference.imaging import decode, is_dicom, read_dicom, read_image_meta, window_array
from inference.models_builtin import build_densenet121_shaped, build_tabular_model, build_tiny_cnn
from inference.postprocess import cosine_ranking, sigmoid, softmax, to_probabilities, top_k, uncertainty
from inference.preprocess import model_rendition, preprocess, preprocess_array, preprocess_batch, tabular_vector
from inference.registry import (
    EMBEDDING_OUTPUT,
    find_embedding_tensor,
    inspect_model,
    spec_from_dict,
    spec_to_dict,
    with_embedding_output,
)
from inference.runtime import SessionCache, available_cores, default_cache, run
from inference.types import (
    Activation,
    Decoded,
    ImageKind,
    ImageMeta,
    InputSpec,
    Layout,
    ModelSpec,
    RenderedImage,
    RunOutput,
    Scaling,
    TabularFeature,
    TabularSpec,
    Uncertainty,
    WindowPreset,
)

__all__ = [
    "CT_WINDOW_PRESETS",
    "EMBEDDING_OUTPUT",
    "Activation",
    "Decoded",
    "DynamicBatcher",
    "ImageKind",
    "ImageMeta",
    "InputSpec",
    "Layout",
    "ModelSpec",
    "RenderedImage",
    "RunOutput",
    "Scaling",
    "SessionCache",
    "TabularFeature",
    "TabularSpec",
    "Uncertainty",
    "View",
    "WindowOptions",
    "WindowPreset",
    "available_cores",
    "build_densenet121_shaped",
    "build_tabular_model",
    "build_tiny_cnn",
    "cosine_ranking",
    "crop_view",
    "decode",
    "default_batcher",
    "default_cache",
    "find_embedding_tensor",
    "inspect_model",
    "is_dicom",
    "model_rendition",
    "border_share",
    "legend_png",
    "occlusion_drops",
    "occlusion_map",
    "original_to_shown",
    "overlay_png",
    "preprocess",
    "preprocess_array",
    "preprocess_batch",
    "read_dicom",
    "read_image_meta",
    "read_meta",
    "render_png",
    "run",
    "shown_to_original",
    "sigmoid",
    "softmax",
    "spec_from_dict",
    "spec_to_dict",
    "statistics_window",
    "tabular_vector",
    "to_probabilities",
    "top_k",
    "uncertainty",
    "view_rect",
    "view_size",
    "window_array",
    "window_options",
    "window_presets",
    "with_embedding_output",
]
