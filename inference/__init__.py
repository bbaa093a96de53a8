"""Images to pixels and tensors, and the embedded ONNX models (CPU onnxruntime)."""

from inference.display import (
    CT_WINDOW_PRESETS,
    ImageMeta,
    RenderedImage,
    dicom_to_unit,
    is_dicom,
    read_dicom,
    read_meta,
    render_png,
    window_array,
)

__all__ = [
    "CT_WINDOW_PRESETS",
    "ImageMeta",
    "RenderedImage",
    "dicom_to_unit",
    "is_dicom",
    "read_dicom",
    "read_meta",
    "render_png",
    "window_array",
]
