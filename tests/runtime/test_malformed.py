"""Every malformed request is a 4xx with the error shape, never a 500: the review's findings
(deeply nested JSON, a lone surrogate, roles that are not names, Unicode digits, a job
payload of NaN, ...) against a real runtime process over TLS."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import RuntimeProcess

NESTED = "[" * 100_000 + "]" * 100_000
MALFORMED: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/v1/auth/users", {"content": '{"username": "u", "password": ' + NESTED + "}"}),
    ("POST", "/v1/queue/q/jobs", {"content": NESTED}),
    ("POST", "/v1/auth/login", {"content": '{"username": "admin", "password": "\\ud800\\udc00x\\ud800"}'}),
    (
        "POST",
        "/v1/auth/users",
        {"content": '{"username": "u1", "password": "long-enough\\udfff", "roles": ["reader"]}'},
    ),
    ("POST", "/v1/auth/users", {"json": {"username": "u2", "password": "long-enough", "roles": [["reader"]]}}),
    ("POST", "/v1/auth/users", {"json": {"username": "u3", "password": "long-enough", "roles": [{"a": 1}]}}),
    ("GET", "/v1/kv?limit=\u00b2", {}),
    ("GET", "/v1/kv?limit=\u0663", {}),
    ("POST", "/v1/queue/q/jobs", {"content": "NaN"}),
    ("POST", "/v1/queue/q/jobs", {"content": '{"x": Infinity}'}),
    ("POST", "/v1/queue/q/jobs", {"content": '{"x": -Infinity}'}),
    ("POST", "/v1/auth/login", {"content": '{"username": "admin", "password": NaN}'}),
    ("POST", "/v1/auth/login", {"content": '{"username": "adm\\ud800in", "password": "long-enough"}'}),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs"), MALFORMED, ids=[f"{m} {p[:24]} #{i}" for i, (m, p, _) in enumerate(MALFORMED)]
)
def test_malformed_input_is_a_4xx_with_the_error_shape(
    api: httpx.Client, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    headers = {"Content-Type": "application/json"} if "content" in kwargs else {}
    reply = api.request(method, path, headers=headers, **kwargs)
    assert 400 <= reply.status_code < 500, f"{reply.status_code}: {reply.text[:300]}"
    body = reply.json()
    assert set(body) == {"error", "detail"}, body


def test_a_job_never_holds_a_value_a_later_claim_cannot_send(api: httpx.Client) -> None:
    assert (
        api.post("/v1/queue/nan-q/jobs", content="NaN", headers={"Content-Type": "application/json"}).status_code == 400
    )
    assert api.post("/v1/queue/nan-q/jobs", json={"ok": 1}).status_code == 201
    assert api.post("/v1/queue/nan-q/claim").status_code == 200


def test_made_up_methods_do_not_grow_metrics(server: RuntimeProcess, api: httpx.Client) -> None:
    """The review sent 100k random methods and /metrics grew to 245 MB (uvicorn's h11 parser
    takes any token; httptools refuses unknown ones, but still passes some 40 WebDAV, RTSP and
    other methods, each a label set of its own without the bound)."""
    for method in ("PROPFIND", "MKCOL", "LOCK", "UNLOCK", "COPY", "MOVE", "SEARCH", "PURGE", "REPORT", "TRACE"):
        api.request(method, "/v1/kv/anything")
    metrics = api.get("/metrics").text
    methods = {line.split('method="', 1)[1].split('"', 1)[0] for line in metrics.splitlines() if 'method="' in line}
    assert methods <= {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "OTHER"}, sorted(methods)[:10]
