"""``GET /docs``: the API's reference as one self-contained HTML page, rendered from ``/openapi.json``.

FastAPI's own ``/docs`` (Swagger UI) and ``/redoc`` load their scripts from a
CDN, so they are blank on a machine that cannot reach it; they are turned off.
This page needs nothing outside the server (no script, no stylesheet, no font
from elsewhere): every operation, what it takes, what it answers and the
schemas, read from the same schema ``/openapi.json`` serves (which any OpenAPI
tool can load).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

__all__ = ["render_docs"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h2 { margin-top: 2.5rem; border-bottom: 1px solid #ddd; }
.op { margin: 1.2rem 0; padding: .6rem 1rem; border-left: 4px solid #888; background: #f7f7f7; }
.method { font-weight: bold; text-transform: uppercase; margin-right: .5rem; }
pre { background: #fff; border: 1px solid #ddd; padding: .6rem; overflow-x: auto; font-size: .85rem; }
td, th { text-align: left; padding: .15rem .8rem .15rem 0; vertical-align: top; }
"""


def _ref(schema: dict[str, Any] | None) -> str:
    """A schema's name where it points at a component, else its JSON."""
    if not schema:
        return ""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    return f"<code>{escape(json.dumps(schema))}</code>"


def render_docs(openapi: dict[str, Any]) -> str:
    """The page for an OpenAPI document (escaped throughout: descriptions are the server's, but still)."""
    info = openapi.get("info", {})
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(info.get('title', 'API'))} API</title>",
           f"<style>{_STYLE}</style></head><body>",
           f"<h1>{escape(info.get('title', 'API'))} {escape(str(info.get('version', '')))}</h1>",
           f"<p>{escape(info.get('description', ''))}</p>",
           "<p>The machine-readable schema: <a href='/openapi.json'>/openapi.json</a> (OpenAPI "
           f"{escape(str(openapi.get('openapi', '')))}). This page loads nothing from elsewhere.</p>",
           "<h2>Endpoints</h2>"]
    for path, operations in openapi.get("paths", {}).items():
        for method, op in operations.items():
            out.append(f"<div class='op' id='{escape(method)}-{escape(path)}'>"
                       f"<span class='method'>{escape(method)}</span><code>{escape(path)}</code>"
                       f" &mdash; {escape(op.get('summary', ''))}")
            if op.get("description"):
                out.append(f"<p>{escape(op['description'])}</p>")
            body = op.get("requestBody", {}).get("content", {})
            for media, content in body.items():
                out.append(f"<p>Body ({escape(media)}): {_ref(content.get('schema'))}</p>")
            rows = []
            for status, answer in op.get("responses", {}).items():
                schemas = [_ref(c.get("schema")) for c in answer.get("content", {}).values() if c.get("schema")]
                rows.append(f"<tr><td>{escape(status)}</td><td>{escape(answer.get('description', ''))}</td>"
                            f"<td>{', '.join(schemas)}</td></tr>")
            if rows:
                out.append("<table><tr><th>status</th><th>when</th><th>body</th></tr>" + "".join(rows) + "</table>")
            out.append("</div>")
    out.append("<h2>Schemas</h2>")
    for name, schema in openapi.get("components", {}).get("schemas", {}).items():
        out.append(f"<h3 id='schema-{escape(name)}'>{escape(name)}</h3>"
                   f"<pre>{escape(json.dumps(schema, indent=2))}</pre>")
    out.append("</body></html>")
    return "\n".join(out)
