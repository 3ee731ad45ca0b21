"""`/openapi.json` built from the route table and the msgspec types of the responses and
request bodies, and `/docs`, a self-contained page that renders it (no CDN: works offline)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from cryptomon import __version__
from cryptomon.http.authorization import anyone
from cryptomon.http.errors import Problem
from cryptomon.http.keys import OPENAPI_DOCUMENT

if TYPE_CHECKING:
    from cryptomon.http.routes import Endpoint


def build(endpoints: Sequence[Endpoint]) -> bytes:
    types: list[type[msgspec.Struct]] = [Problem]
    for endpoint in endpoints:
        for shape in (endpoint.response, endpoint.body):
            if shape is not None and shape not in types:
                types.append(shape)
    refs, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    by_type = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        responses: dict[str, Any] = {}
        ok = str(endpoint.ok_status)
        if endpoint.websocket:
            # Its success is the handshake, never a 200.
            responses["101"] = {"description": "Switching Protocols: the WebSocket is open"}
        elif endpoint.response is not None:
            content: dict[str, Any] = {"application/json": {"schema": by_type[endpoint.response]}}
            if endpoint.media_type is not None:
                content[endpoint.media_type] = {"schema": {"type": "string"}}
            responses[ok] = {"description": endpoint.ok_description, "content": content}
        elif endpoint.media_type is not None:
            responses[ok] = {
                "description": endpoint.ok_description,
                "content": {endpoint.media_type: {"schema": {"type": "string"}}},
            }
        else:
            responses[ok] = {"description": endpoint.ok_description}
        if endpoint.links:
            responses[ok]["links"] = {
                link.operation_id: {
                    "operationId": link.operation_id,
                    "parameters": {link.parameter: link.value},
                }
                for link in endpoint.links
            }
        if endpoint.unhealthy_status is not None:
            responses[str(endpoint.unhealthy_status)] = {
                "description": endpoint.unhealthy_description,
                "content": responses[ok]["content"],
            }
        for status, description in endpoint.alike:
            responses[str(status)] = {
                "description": description,
                "content": responses[ok]["content"],
            }
        statuses = set(endpoint.errors) | {429}  # every route: per-client limits
        private = not endpoint.write and endpoint.exemption is not anyone
        if private:
            statuses.add(401)  # with a read token configured, without it
        if any(p.where == "path" for p in endpoint.params):
            statuses.add(404)  # a path that matches no route
        statuses -= {status for status, _ in endpoint.alike}
        if endpoint.websocket:
            statuses.add(426)
        for status in sorted(statuses):
            responses[str(status)] = {
                "description": "A problem (RFC 9457)",
                "content": {"application/problem+json": {"schema": by_type[Problem]}},
            }
        if endpoint.websocket:
            responses["426"]["description"] = (
                "Upgrade Required: a plain GET, without `Upgrade: websocket`"
            )
            responses["426"]["headers"] = {
                "Upgrade": {
                    "description": "The protocol to upgrade to",
                    "schema": {"type": "string", "const": "websocket"},
                }
            }
        # Any route: aiohttp's HTTP parser refuses a request line or header over
        # 8190 bytes, or a malformed one, in plain text before our handlers see it.
        refused = responses.setdefault("400", {"description": "A bad request", "content": {}})
        refused["content"]["text/plain"] = {"schema": {"type": "string"}}
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "operationId": f"{endpoint.method.lower()}_{endpoint.handler.__name__}",
            "parameters": [_parameter(p) for p in endpoint.params],
            "responses": responses,
        }
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": by_type[endpoint.body]}},
            }
        if endpoint.write or private:
            # The token is needed only when one is configured; without one, writes are
            # allowed from loopback and reads from anywhere. A read takes the read token
            # or the API token.
            operation["security"] = [{"bearer": []}, {}]
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    document = {
        "openapi": "3.1.0",
        "info": {"title": "cryptomon", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    return msgspec.json.encode(document)


def _parameter(param: Any) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": param.where,
        "required": param.where == "path" or param.required,
        "description": param.description,
        "schema": param.schema(),
    }


async def spec(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_DOCUMENT], content_type="application/json")


_DOCS = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cryptomon API</title>
<style>
body{font:15px/1.5 system-ui,sans-serif;margin:0 auto;max-width:60rem;padding:1rem;color:#1b1f24}
h1{font-size:1.4rem} code{background:#f0f2f5;padding:0 .25rem;border-radius:3px}
.op{border:1px solid #d8dde3;border-radius:6px;margin:.6rem 0;padding:.5rem .8rem}
.m{font-weight:700;display:inline-block;min-width:3.5rem}
.get{color:#1a7f37}.post{color:#9a6700} table{border-collapse:collapse;margin:.3rem 0}
td{padding:.1rem .6rem .1rem 0;vertical-align:top;font-size:.9rem}
</style></head><body>
<h1>cryptomon API</h1>
<p>The machine-readable document is <a href="/openapi.json"><code>/openapi.json</code></a>.
Write endpoints need <code>Authorization: Bearer &lt;token&gt;</code> when a token
is configured; with a read token configured, reads need it (or the API token) too.</p>
<div id="ops">Loading…</div>
<script>
fetch("/openapi.json").then(r => r.json()).then(doc => {
  const out = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const rows = (op.parameters || []).map(p =>
        `<tr><td><code>${p.name}</code></td><td>${p.in}</td><td>${p.description}</td></tr>`);
      out.push(`<div class="op"><span class="m ${method}">${method.toUpperCase()}</span>` +
        `<code>${path}</code> ${op.summary}` +
        (rows.length ? `<table>${rows.join("")}</table>` : "") + `</div>`);
    }
  }
  document.getElementById("ops").innerHTML = out.join("");
});
</script></body></html>
"""


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=_DOCS, content_type="text/html")
