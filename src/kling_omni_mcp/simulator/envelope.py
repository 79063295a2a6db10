"""The vendor's answer envelope ``{"code", "message", "request_id", "data"}`` and its errors."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.responses import Response

__all__ = ["ApiError", "envelope_response", "error_response", "new_request_id"]


class ApiError(Exception):
    """A refusal the vendor would answer with: HTTP status, vendor code and message."""

    def __init__(
        self, http_status: int, code: int, message: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message
        self.headers = headers or {}


def new_request_id() -> str:
    """A fresh id for one request, as the vendor returns in every envelope."""
    return uuid.uuid4().hex


def envelope_response(
    data: Any,
    *,
    code: int = 0,
    message: str = "SUCCEED",
    http_status: int = 200,
    headers: dict[str, str] | None = None,
) -> Response:
    """A JSON envelope; ``json.dumps`` keeps Python ints exact (element ids exceed 2**53)."""
    body = {"code": code, "message": message, "request_id": new_request_id(), "data": data}
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status_code=http_status,
        media_type="application/json",
        headers=headers,
    )


def error_response(error: ApiError) -> Response:
    """The envelope for a refusal: ``data`` is null, ``message`` says what to fix."""
    return envelope_response(
        None,
        code=error.code,
        message=error.message,
        http_status=error.http_status,
        headers=error.headers or None,
    )
