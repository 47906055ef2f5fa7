"""The OpenAPI 3 document, generated from the route table so it cannot drift from it.

The table says which routes exist, their permission and parameters; this module adds what a
client needs beyond that: each route's request body, the formats of its parameters, and every
status it may answer. ``tests/runtime/test_openapi_fuzz.py`` holds the document to the
server's behaviour (schemathesis against a running node: no 5xx, every answer documented).
"""

from __future__ import annotations

from typing import Any

from runtime.routing import OPS, ROUTES, Route

_ERROR = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
_STRING = {"type": "string"}
_PASSWORD = {"type": "string", "minLength": 8, "maxLength": 1024}
_USERNAME = {"type": "string", "pattern": "^[A-Za-z0-9_.@-]{1,64}$"}
# keys are 1-512 bytes of UTF-8 without control characters: 128 characters always fit
_KEY = {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]{1,128}$"}
_KEY_OR_EMPTY = {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]{0,128}$"}
_PARAMETERS = {
    "key": _KEY,
    "queue": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
    "job": {"type": "string", "pattern": "^[0-9a-f]{16}-[0-9a-f]{8}$"},
    "user": _USERNAME,
}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


_BODIES: dict[str, dict[str, Any]] = {
    "auth.login": _object(
        {"username": {"type": "string", "minLength": 1}, "password": {"type": "string", "minLength": 1}},
        ["username", "password"],
    ),
    "auth.users.create": _object(
        {
            "username": _USERNAME,
            "password": _PASSWORD,
            "roles": {"type": "array", "minItems": 1, "items": {"enum": ["reader", "writer", "admin"]}},
        },
        ["username", "password", "roles"],
    ),
    "auth.password": _object({"current": _STRING, "new": _PASSWORD}, ["current", "new"]),
    "auth.users.update": _object({"disabled": {"type": "boolean"}}, ["disabled"]),
    "auth.users.password": _object({"password": _PASSWORD}, ["password"]),
    "queue.enqueue": {},  # any JSON value: the job's payload
    "queue.ack": _object({"lease_id": _STRING}, ["lease_id"]),
}
_RAW_BODY = {"kv.put": "application/octet-stream", "cluster.renew": "application/x-pem-file"}
_QUERY: dict[str, list[dict[str, Any]]] = {
    "kv.list": [
        {"name": "prefix", "in": "query", "schema": _KEY_OR_EMPTY},
        {"name": "after", "in": "query", "schema": _KEY_OR_EMPTY},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
    ],
    "queue.claim": [
        {"name": "lease", "in": "query", "schema": {"type": "number", "minimum": 0.1, "maximum": 3600}},
    ],
}
_HEADERS: dict[str, list[dict[str, Any]]] = {
    "kv.put": [
        {"name": "If-Match", "in": "header", "schema": {"type": "string", "pattern": '^"?[0-9]{1,19}"?$'}},
        {"name": "If-None-Match", "in": "header", "schema": {"const": "*"}},
    ],
    "kv.delete": [{"name": "If-Match", "in": "header", "schema": {"type": "string", "pattern": '^"?[0-9]{1,19}"?$'}}],
}
# what each route answers when it works, and what else it may answer besides the common ones
_SUCCESS: dict[str, tuple[str, ...]] = {
    "auth.users.create": ("201",),
    "queue.enqueue": ("201",),
    "auth.logout": ("204",),
    "auth.password": ("204",),
    "auth.users.delete": ("204",),
    "auth.users.password": ("204",),
    "kv.delete": ("204",),
    "queue.ack": ("204",),
    "queue.delete": ("204",),
    "queue.claim": ("200", "204"),
}
_MORE: dict[str, dict[str, str]] = {
    "readyz": {"503": "The DB is unreachable"},
    "cluster.renew": {"400": "Not a signing request", "403": "No member certificate", "404": "Not an issuer"},
    "auth.login": {"401": "Unknown user or wrong password", "403": "User disabled", "429": "Too many failed logins"},
    "auth.users.create": {"409": "User exists"},
    "auth.password": {"403": "Wrong current password"},
    "auth.users.delete": {"404": "No such user"},
    "auth.users.update": {"404": "No such user"},
    "auth.users.password": {"404": "No such user"},
    "kv.get": {"404": "No such key"},
    "kv.put": {"412": "If-Match / If-None-Match did not hold"},
    "kv.delete": {"404": "No such key", "412": "If-Match did not hold"},
    "queue.ack": {"404": "No such job", "409": "The lease no longer holds the job"},
    "queue.get": {"404": "No such job"},
    "queue.delete": {"404": "No such job"},
}
_AUTH = {"401": "No or bad token", "403": "Missing permission"}


def _responses(route: Route) -> dict[str, Any]:
    statuses: dict[str, str] = {status: "OK" for status in _SUCCESS.get(route.name, ("200",))}
    if route.permission != "public" or route.name == "auth.whoami":
        statuses.update(_AUTH)
    if route.service != OPS:
        statuses.update({"400": "Malformed request", "503": "The DB cannot answer now (not_applied / outcome_unknown)"})
        if route.method in ("PUT", "POST", "PATCH"):
            statuses["413"] = "Body over 1 MiB"
        if route.method != "GET":
            statuses["507"] = "The node's disk is full; nothing was applied (insufficient_storage)"
        if route.service in ("kv", "queue", "auth") and route.permission != "public":
            statuses.setdefault("404", "Not found")
    if route.name == "metrics":
        statuses.update(_AUTH)
    statuses.update(_MORE.get(route.name, {}))
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {
        status: {"description": text, **(error if status >= "400" else {})} for status, text in sorted(statuses.items())
    }


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.name,
        "summary": route.summary,
        "tags": [route.service],
        "responses": _responses(route),
    }
    names = [p.split(":")[0].split("}")[0] for p in route.path.split("{")[1:]]
    parameters = [{"name": n, "in": "path", "required": True, "schema": _PARAMETERS.get(n, _STRING)} for n in names]
    parameters += _QUERY.get(route.name, []) + _HEADERS.get(route.name, [])
    if parameters:
        op["parameters"] = parameters
    if route.name in _BODIES:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _BODIES[route.name]}}}
    elif route.name in _RAW_BODY:
        raw = {"schema": {"type": "string", "format": "binary"}}
        op["requestBody"] = {"required": route.name != "kv.put", "content": {_RAW_BODY[route.name]: raw}}
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
