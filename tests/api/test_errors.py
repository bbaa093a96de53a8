"""Error mapping of the API shell, in process: a service's ``Busy`` is 503 with ``Retry-After``."""

from __future__ import annotations

import json

from api import errors
from medlabel.errors import Busy


def test_busy_is_503_with_retry_after() -> None:
    message = "64 uploads are already waiting for de-identification on this server; try again in a minute"
    response = errors._medlabel(None, Busy(message))  # type: ignore[arg-type]  # the handler never reads the request
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert json.loads(response.body) == {"error": {"code": "unavailable", "message": message}}
