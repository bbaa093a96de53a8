"""The API reference is generated from the OpenAPI schema and kept current, like the CLI reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_api_reference_is_current() -> None:
    rendered = subprocess.run([sys.executable, "-m", "api.reference"], capture_output=True, text=True, check=True,
                              timeout=120).stdout
    assert (DOCS / "api-reference.md").read_text() == rendered, "run: python -m api.reference > docs/api-reference.md"


def test_every_route_is_in_the_reference_and_says_who_may_call_it() -> None:
    from api.app import create_app

    reference = (DOCS / "api-reference.md").read_text()
    schema = create_app(None).openapi()
    for path, item in schema["paths"].items():
        for method, op in item.items():
            assert f"## `{method.upper()} {path}`" in reference
            if path != "/api/v1/health":
                assert "Scope `" in op["description"], (method, path)
