"""De-identification: DICOM PS3.15 basic profile, keyed pseudonyms, burned-in text masking, photos.

A pure library: bytes in, bytes and a report out. Only ``deid.io`` touches the filesystem.
"""

import os

# Nothing phones home: onnxruntime (here and under rapidocr) writes a device id and queues telemetry
# under $HOME/.cache/Microsoft and $TMPDIR/.ses on import unless this is set first (docs/security.md).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from deid.engine import apply_masks, check_file, deidentify_bytes, patient_characteristics
from deid.pixels import Detector, TextBox
from deid.pseudonyms import patient_pseudonym, remap_uid
from deid.types import DeidOptions, DeidResult

__all__ = ["DeidOptions", "DeidResult", "Detector", "TextBox", "apply_masks", "check_file", "deidentify_bytes",
           "patient_characteristics", "patient_pseudonym", "remap_uid"]
