"""The OpenAPI 3 document, generated from the route table so it cannot drift from it."""

from __future__ import annotations

from typing import Any

from runtime.routing import ROUTES, Route

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
_STATUSES = {"public": {}, "read": {"401": "No or bad token", "403": "Missing permission"}}
_STATUSES["write"] = _STATUSES["admin"] = _STATUSES["read"]


def _operation(route: Route) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": {"description": "OK"}}
    for status, text in _STATUSES[route.permission].items():
        responses[status] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.service],
        "responses": responses,
    }
    params = [p.split(":")[0] for p in route.path.split("{")[1:]]
    if params:
        op["parameters"] = [
            {"name": p.split("}")[0], "in": "path", "required": True, "schema": {"type": "string"}} for p in params
        ]
    if route.permission != "public":
        op["security"] = [{"bearer": []}]
    return op


def document(version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        path = route.path.replace(":path}", "}")
        paths.setdefault(path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "modematrix runtime", "version": version},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }
