"""medlabel: de-identify, label, verify and learn from medical images."""

import os

# Nothing phones home: onnxruntime (here and under rapidocr) writes a device id and queues telemetry
# under $HOME/.cache/Microsoft and $TMPDIR/.ses on import unless this is set first (docs/security.md).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

__version__ = "0.1.0"
