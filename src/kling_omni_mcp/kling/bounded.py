"""One vendor exchange with hard bounds: a total deadline and a size cap on the answer.

httpx2's timeouts are per operation (connect, each read): a vendor that drips one byte every two
seconds never trips a 10 s read timeout and could hold a call for ever. So the whole exchange,
request sent and body read, runs under one ``anyio.fail_after``. The body is streamed and counted
(after any Content-Encoding is undone, so a gzip bomb is counted at its real size); an answer over
``MAX_ANSWER_BYTES`` is refused rather than held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anyio
import httpx2

from kling_omni_mcp.kling.errors import KlingResponseError, KlingTimeoutError

__all__ = ["MAX_ANSWER_BYTES", "Answer", "exchange"]

#: The largest JSON answer accepted. A list page of 500 tasks with 9 images each is ~1 MB.
MAX_ANSWER_BYTES = 4 * 1024 * 1024
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    """A vendor answer read in full (and within bounds)."""

    status_code: int
    headers: httpx2.Headers
    content: bytes


async def exchange(
    http: httpx2.AsyncClient,
    method: str,
    url: str,
    *,
    where: str,
    deadline: float,
    max_bytes: int = MAX_ANSWER_BYTES,
    **request: Any,
) -> Answer:
    """Send one request and read its whole answer within ``deadline`` seconds and ``max_bytes``.

    Raises ``KlingTimeoutError`` (retryable) past the deadline and ``KlingResponseError`` for an
    answer that is too large. httpx2's own errors pass through for the caller to translate.
    """
    try:
        with anyio.fail_after(deadline):
            async with http.stream(method, url, **request) as response:
                declared = response.headers.get("content-length", "")
                if declared.strip().isdigit() and int(declared) > max_bytes:
                    raise _too_large(where, response.status_code, max_bytes)
                body = bytearray()
                async for chunk in response.aiter_bytes(_CHUNK):
                    body += chunk
                    if len(body) > max_bytes:
                        raise _too_large(where, response.status_code, max_bytes)
                return Answer(response.status_code, response.headers, bytes(body))
    except TimeoutError:
        raise KlingTimeoutError(
            f"The Kling API did not finish answering {where} within {deadline:g} s.",
            hint="The service may be slow or unreachable: try again shortly.",
            retryable=True,
        ) from None


def _too_large(where: str, status: int, max_bytes: int) -> KlingResponseError:
    return KlingResponseError(
        f"The Kling API answered {where} with HTTP {status} and a body over "
        f"{max_bytes // (1024 * 1024)} MiB; a real answer is far smaller, so it was refused unread.",
        hint="KLING_API_BASE_URL may point at something other than the Kling API, or a proxy is in the way.",
        http_status=status,
    )
