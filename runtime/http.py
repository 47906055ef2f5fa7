"""Response helpers: every error in the API is ``{"error": code, "detail": text}``."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse, Response


def error(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=dict(headers or {}))


def json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))
