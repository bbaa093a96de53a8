"""``medlabel api``: the API on uvicorn, with the settings of this process (``MEDLABEL_*``)."""

from __future__ import annotations

import logging

import uvicorn

from api.app import Limits, create_app
from medlabel.settings import load_settings
from services.context import AppContext

logger = logging.getLogger(__name__)


def serve(host: str, port: int) -> None:
    settings = load_settings()
    ctx = AppContext.from_settings(settings)
    limits = Limits(max_upload_mb=settings.api_max_upload_mb, rate_per_minute=settings.api_rate_per_minute)
    app = create_app(ctx, limits, close_context=True)
    # access log off: paths hold only ids, but one line per call adds nothing the audit log lacks
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, server_header=False,
                timeout_graceful_shutdown=10)
