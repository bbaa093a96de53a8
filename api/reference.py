"""Generate docs/api-reference.md from the OpenAPI schema (``python -m api.reference > docs/api-reference.md``).

A test regenerates it and compares, so the reference never drifts from the routes.
"""

from __future__ import annotations

import json
from typing import Any

from api.app import create_app

METHODS = ("get", "post", "put", "patch", "delete")


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " | ".join(f"`{v}`" for v in schema["enum"])
    if schema.get("format") == "binary" or schema.get("contentMediaType") == "application/octet-stream":
        return "file"
    return str(schema.get("type", "object"))


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _fields(schema: dict[str, Any], components: dict[str, Any]) -> list[str]:
    schema = _resolve(schema, components)
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema.get("properties", {}).items():
        bounds = ", ".join(f"{k} {prop[k]}" for k in ("minimum", "maximum") if k in prop)
        default = f"default `{json.dumps(prop['default'])}`" if "default" in prop else ""
        extra = "; ".join(x for x in ("required" if name in required else "", default, bounds) if x)
        desc = prop.get("description", "")
        rows.append(f"| `{name}` | {_type(prop)} | {extra} | {desc} |")
    return rows


def render() -> str:
    schema = create_app(None).openapi()
    components = schema.get("components", {}).get("schemas", {})
    out = ["# API reference", "",
           "Generated from the OpenAPI schema by `python -m api.reference > docs/api-reference.md`; "
           "`tests/api/test_reference.py` keeps it current. How to use the API: [api.md](api.md).", "",
           f"{schema['info']['title']} {schema['info']['version']}. Every route but `/health` needs "
           "`Authorization: Bearer <token>`; errors are `{\"error\": {\"code\", \"message\"}}` (`Error`).", ""]
    for path, item in schema["paths"].items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            out += [f"## `{method.upper()} {path}`", "", f"**{op.get('summary', '')}**", ""]
            if op.get("description"):
                out += [op["description"].strip(), ""]
            params = op.get("parameters", [])
            if params:
                out += ["| parameter | in | type | | description |", "| --- | --- | --- | --- | --- |"]
                for p in params:
                    s = p.get("schema", {})
                    default = f"default `{json.dumps(s['default'])}`" if "default" in s else ""
                    out.append(f"| `{p['name']}` | {p['in']} | {_type(s)} | "
                               f"{'required' if p.get('required') else default} | {p.get('description', '')} |")
                out.append("")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                out += [f"Body (`{media}`):", "", "| field | type | | description |", "| --- | --- | --- | --- |",
                        *_fields(content.get("schema", {}), components), ""]
            out += ["| status | body |", "| --- | --- |"]
            for status, response in op.get("responses", {}).items():
                kinds = []
                for media, content in response.get("content", {}).items():
                    ref = content.get("schema")
                    kinds.append(f"`{media}` {_type(ref)}" if ref else f"`{media}`")
                out.append(f"| {status} | {response.get('description', '')}: {', '.join(kinds) or 'empty'} |")
            out.append("")
    out += ["## Schemas", ""]
    for name, component in sorted(components.items()):
        if name.startswith(("Body_", "HTTPValidationError", "ValidationError")):
            continue
        out += [f"### `{name}`", "", "| field | type | | description |", "| --- | --- | --- | --- |",
                *_fields(component, components), ""]
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
