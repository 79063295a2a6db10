"""One request to the Kling API and its answer's ``data``: every failure a ``KlingError``.

This is where the vendor's answers are translated, in two places only: ``transport_errors``
(httpx2 exceptions: no answer) and ``read_envelope`` (what the vendor answered). The body is read
within one deadline and a size cap (``kling.bounded``); every text that leaves, in data or in an
error, has our credentials masked and is cleaned (``kling.vendor_text``). Retries are not done
here (``kling.retry``), nor are the operations (``kling.client``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
from pydantic import ValidationError

from kling_omni_mcp.kling.auth import Auth
from kling_omni_mcp.kling.bounded import Answer, exchange
from kling_omni_mcp.kling.errors import (
    KlingConfigError,
    KlingError,
    KlingResponseError,
    KlingTimeoutError,
    KlingTransportError,
    api_error_for,
)
from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.kling.vendor_text import clean_vendor_json, clean_vendor_text

__all__ = ["Exchanger", "read_envelope", "task_from", "transport_errors"]

# Logged under the client's name, as before this module was split out of it: operators filter
# the client's requests by that name.
logger = logging.getLogger("kling_omni_mcp.kling.client")

_GATEWAY_STATUSES = frozenset({429, 502, 503, 504})
_SNIPPET_CHARS = 120


class Exchanger:
    """Sends one request at a time to ``base_url``, signed by ``auth``, over ``http``.

    Holds whether the owning client is closed: after ``close()`` nothing more is sent.
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        http: httpx2.AsyncClient,
        *,
        timeout_seconds: float,
        timeout: httpx2.Timeout,
        user_agent: str,
    ) -> None:
        self._base_url = base_url
        self._auth = auth
        self._http = http
        self._timeout_seconds = timeout_seconds
        self._timeout = timeout
        self._user_agent = user_agent
        self.closed = False

    def close(self) -> None:
        """Refuse every later request (the owner closes the HTTP client itself)."""
        self.closed = True

    async def send(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        attempt: int = 1,
        not_found: bool = False,
        select: Callable[[Any], Any] | None = None,
    ) -> Any:
        """One request and its answer's ``data``; every failure is a ``KlingError``.

        ``select`` picks the part of the raw ``data`` worth cleaning (a list sweep keeps only the
        rows it looks for); it only compares values, nothing it sees leaves uncleaned.
        """
        if self.closed:
            raise RuntimeError("this KlingClient is closed")
        authorization = self._auth.authorization()
        headers = {
            "Authorization": authorization,
            "Accept": "application/json",
            "User-Agent": self._user_agent,
        }
        secrets = [authorization.partition(" ")[2], *self._auth.secrets()]
        where = f"{method} {path}"
        try:
            with transport_errors(method, path, self._timeout_seconds):
                # The per-read timeout alone lets a dripping vendor hold the call: the whole
                # exchange must also end within one timeout (kling.bounded).
                response = await exchange(
                    self._http,
                    method,
                    self._base_url + path,
                    where=where,
                    deadline=self._timeout_seconds,
                    json=json_body,
                    params=params,
                    headers=headers,
                    timeout=self._timeout,
                )
        except KlingError as exc:
            _scrub(exc, secrets)
            raise
        request_id = _peek_request_id(response)
        request_id = clean_vendor_text(request_id, secrets, max_chars=100) if request_id else None
        logger.debug(
            "kling %s %s -> HTTP %d request_id=%r attempt=%d",
            method,
            path,
            response.status_code,
            request_id,
            attempt,
        )
        try:
            data = read_envelope(response, where=where, not_found=not_found)
        except KlingError as exc:
            # A vendor message or a proxy's error page may echo the credential we sent; the
            # error text reaches the model and its transcript, so it must not carry it.
            _scrub(exc, secrets)
            raise
        # The one place vendor data enters: every string leaves without our credentials,
        # control characters or escapes, and capped in length (kling.vendor_text).
        return clean_vendor_json(select(data) if select is not None else data, secrets)


@contextlib.contextmanager
def transport_errors(method: str, path: str, timeout: float) -> Iterator[None]:
    """The one place httpx2 exceptions become ``KlingError``s (never carrying headers)."""
    where = f"{method} {path}"
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise KlingTimeoutError(
            f"The Kling API did not answer {where} within {timeout:g} s ({type(exc).__name__}).",
            hint="The service may be slow or unreachable: try again shortly.",
            retryable=True,
        ) from exc
    except (httpx2.UnsupportedProtocol, httpx2.InvalidURL) as exc:
        raise KlingConfigError(
            f"The Kling API base URL cannot be used for {where}: {exc}.",
            hint="Set KLING_API_BASE_URL to an http(s) URL such as https://api-singapore.klingai.com.",
        ) from exc
    except httpx2.LocalProtocolError as exc:
        # h11 quotes the offending header value, which may be a credential: never show it.
        raise KlingConfigError(
            f"The request {where} could not be sent: a header value is not valid HTTP.",
            hint="Check the Kling keys for stray spaces, quotes or line breaks.",
        ) from exc
    except httpx2.TransportError as exc:
        raise KlingTransportError(
            f"No answer from the Kling API for {where}: {type(exc).__name__}: {exc}.",
            hint="Check the network and KLING_API_BASE_URL; the request can be retried.",
            retryable=True,
        ) from exc
    except httpx2.RequestError as exc:  # decoding errors, redirect loops: an answer we cannot read
        raise KlingResponseError(
            f"Unreadable answer from the Kling API for {where}: {type(exc).__name__}: {exc}."
        ) from exc


def _snippet(body: bytes) -> str:
    """A short, single-line, printable excerpt of a body, for error messages."""
    text = body[: _SNIPPET_CHARS * 4].decode("utf-8", errors="replace")
    text = re.sub(r"\s+", " ", re.sub(r"[^\x20-\x7e\s]", "?", text)).strip()
    return text[:_SNIPPET_CHARS] + ("..." if len(text) > _SNIPPET_CHARS else "")


def _retry_after(response: Answer) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= 3600 else None


def read_envelope(response: Answer, *, where: str, not_found: bool) -> Any:
    """Check the answer is the vendor's envelope; return ``data`` or raise the mapped error."""
    status = response.status_code
    content_type = response.headers.get("content-type", "") or "no content type"
    gateway = status in _GATEWAY_STATUSES

    def malformed(problem: str) -> KlingResponseError:
        body = _snippet(response.content)
        shown = f" Body starts: {body!r}." if body else " The body was empty."
        error = KlingResponseError(
            f"The Kling API answered {where} with HTTP {status} ({content_type}), {problem}.{shown}",
            hint="A proxy or gateway may be in the way, or KLING_API_BASE_URL may point elsewhere."
            if not gateway
            else "The service or a gateway in front of it is overloaded: try again shortly.",
            retryable=gateway or status >= 500,
            http_status=status,
        )
        error.retry_after = _retry_after(response)
        return error

    try:
        payload = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        kind = "an HTML page" if "html" in content_type.lower() else "a body that is not JSON"
        raise malformed(f"{kind} instead of the JSON envelope") from None
    if not isinstance(payload, dict):
        raise malformed(f"a JSON {type(payload).__name__} instead of an object")
    code = payload.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        raise malformed("JSON without an integer 'code'")
    message = payload.get("message")
    request_id = payload.get("request_id")
    request_id = request_id if isinstance(request_id, str) else None
    if code != 0:
        error = api_error_for(
            code=code,
            vendor_message=message if isinstance(message, str) else "",
            http_status=status,
            request_id=request_id,
            not_found=not_found,
        )
        error.retry_after = _retry_after(response)
        raise error
    if not 200 <= status < 300:
        raise malformed("code 0 on a failure status")
    if "data" not in payload or payload["data"] is None:
        raise malformed("no 'data' in a successful answer")
    return payload["data"]


def task_from(data: Any, *, where: str) -> TaskData:
    """``data`` as a ``TaskData``, or a ``KlingResponseError`` saying which field is wrong."""
    if not isinstance(data, dict):
        raise KlingResponseError(
            f"The Kling API answered {where} with 'data' of type {type(data).__name__}, expected an object."
        )
    try:
        return TaskData.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise KlingResponseError(
            f"The Kling API answered {where} with a task of the wrong shape ({problems})."
        ) from None


def _scrub(error: KlingError, secrets: list[str]) -> None:
    """Mask the credentials (and any bearer token or JWT) in every text of ``error``, in place;
    drop control characters and escapes from the vendor's parts."""
    error.message = clean_vendor_text(error.message, secrets, max_chars=2000)
    error.args = (error.message,)
    if error.hint:
        error.hint = clean_vendor_text(error.hint, secrets, max_chars=2000)
    if error.vendor_message:
        error.vendor_message = clean_vendor_text(error.vendor_message, secrets, max_chars=2000)
    if error.request_id:
        error.request_id = clean_vendor_text(error.request_id, secrets, max_chars=100)


def _peek_request_id(response: Answer) -> str | None:
    """The envelope's ``request_id`` for the debug log, without failing on odd bodies."""
    match = re.search(rb'"request_id"\s*:\s*"([^"]{1,100})"', response.content[:4096])
    return match.group(1).decode("ascii", errors="replace") if match else None
