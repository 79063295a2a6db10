"""Reading a request body as the vendor would: bounded in bytes, then parsed as strict JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.requests import Request

from .envelope import ApiError

__all__ = ["parse_json_body", "read_body"]

#: Past the body limit, up to this much more is read and dropped so the client sees the 413.
_DRAIN_BYTES = 32 * 1024 * 1024
_DRAIN_SECONDS = 5.0


async def read_body(request: Request, limit: int) -> bytes:
    """The body, read as a stream and refused (413) as soon as it passes ``limit`` bytes."""
    too_big = ApiError(
        413,
        1200,
        f"request body is too large: the limit is {limit} bytes",
        headers={"connection": "close"},
    )
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + _DRAIN_BYTES:
        raise too_big
    chunks: list[bytes] = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            await _drain(stream)
            raise too_big
        chunks.append(chunk)
    return b"".join(chunks)


async def _drain(stream: AsyncIterator[bytes]) -> None:
    """Read and drop what the client is still sending, within bounds.

    Answering while the client is still writing makes many clients see a broken pipe instead of
    the 413; past these bounds the connection is closed anyway.
    """
    drained = 0
    with anyio.move_on_after(_DRAIN_SECONDS):
        async for chunk in stream:
            drained += len(chunk)
            if drained > _DRAIN_BYTES:
                break


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes) -> Any:
    """Parse a request body; ``ApiError`` 400/1200 when it is not valid JSON.

    Python's ``json`` keeps integers exact (element ids beyond 2**53 survive); NaN and Infinity,
    which are not JSON, are refused.
    """
    if not body.strip():
        raise ApiError(400, 1200, "request body is empty: send a JSON object")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ApiError(400, 1200, f"request body is not valid JSON: {reason}") from None
