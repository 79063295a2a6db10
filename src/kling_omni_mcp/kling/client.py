"""The typed async client of the Omni-Image API: create, query, list.

One ``httpx2.AsyncClient`` is shared by every call; every request carries a timeout; reads are
retried with exponential backoff and jitter inside a bounded number of attempts and an overall
deadline. A create is never re-sent blindly: each one carries an ``external_task_id`` and, when
its fate is unknown (no answer, a 5xx), the task is looked up by that id before anything is sent
again, so one ``create_task`` call never makes two tasks.

Errors are translated in two places only: ``_transport_errors`` (httpx2 exceptions) and
``_read_envelope`` (what the vendor answered). See ``kling.errors`` for the hierarchy.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import random
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import anyio
import httpx2
from pydantic import ValidationError

from kling_omni_mcp import __version__
from kling_omni_mcp.kling.account import ACCOUNT_COSTS_PATH, AccountCosts
from kling_omni_mcp.kling.auth import Auth
from kling_omni_mcp.kling.bounded import Answer, exchange
from kling_omni_mcp.kling.errors import (
    KlingAuthError,
    KlingConfigError,
    KlingError,
    KlingInvalidRequestError,
    KlingRateLimitError,
    KlingResponseError,
    KlingServerError,
    KlingTaskNotFoundError,
    KlingTimeoutError,
    KlingTransportError,
    KlingValidationError,
    api_error_for,
)
from kling_omni_mcp.kling.models import CreateImageRequest, TaskData, TaskInfo
from kling_omni_mcp.kling.rules import validate_create_request
from kling_omni_mcp.kling.vendor_text import clean_vendor_json, clean_vendor_text

__all__ = ["DEFAULT_USER_AGENT", "OMNI_IMAGE_PATH", "KlingClient", "RetryPolicy", "new_external_task_id"]

logger = logging.getLogger(__name__)

OMNI_IMAGE_PATH = "/v1/images/omni-image"
DEFAULT_USER_AGENT = f"kling-omni-mcp/{__version__}"
PAGE_NUM_RANGE = (1, 1000)
PAGE_SIZE_RANGE = (1, 500)

# 1000 (auth failed) and 1004 (expired) may come from a stale or clock-skewed token: one fresh
# signature is worth a try. 1001-1003 cannot be fixed by re-signing.
_RESIGN_CODES = frozenset({1000, 1004})
# 1303 (concurrency over the pack's limit) asks for backoff starting at >= 1 s.
_CONCURRENCY_CODE = 1303
_GATEWAY_STATUSES = frozenset({429, 502, 503, 504})
_SNIPPET_CHARS = 120
#: Tasks scanned for an external id that the vendor's query resolved to another task's task_id.
_EXTERNAL_ID_SCAN = 100


def new_external_task_id() -> str:
    """A fresh id for ``external_task_id``: the idempotency key of one create call."""
    return f"kom-{uuid.uuid4().hex}"


@dataclass(frozen=True)
class RetryPolicy:
    """How retryable failures are retried: bounded attempts, exponential backoff, a deadline.

    ``deadline`` bounds the whole operation: no new attempt starts once the next pause would end
    past it. ``sleep`` and ``clock`` are injectable so tests can run without waiting.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    deadline: float = 60.0
    jitter: bool = True
    #: Smallest pause after a 1303 (concurrency limit); the vendor asks for >= 1 s.
    concurrency_min_delay: float = 1.0
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.deadline <= 0:
            raise ValueError("delays must be >= 0 and the deadline > 0")

    def delay(self, retry: int, *, floor: float = 0.0, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        Exponential from ``max(base_delay, floor)``, capped at ``max_delay``; with jitter, a random
        point in the upper half ("equal jitter"), so clients spread out but still back off. A
        server's ``Retry-After`` raises the pause (never past ``max_delay``).
        """
        start = max(self.base_delay, floor)
        pause = min(self.max_delay, start * 2.0 ** max(0, retry - 1))
        if self.jitter:
            pause *= 0.5 + random.random() / 2
        if retry_after is not None:
            pause = max(pause, min(retry_after, self.max_delay))
        return max(pause, min(floor, self.max_delay))


class _Budget:
    """Attempts and time spent by one operation under a ``RetryPolicy``."""

    def __init__(self, policy: RetryPolicy, operation: str) -> None:
        self.policy = policy
        self.operation = operation
        self.started = policy.clock()
        self.retries = 0

    async def pause(self, error: KlingError) -> None:
        """Sleep before the next attempt, or re-raise ``error`` when attempts or time run out."""
        self.retries += 1
        if self.retries >= self.policy.max_attempts:
            logger.debug("kling %s: giving up after %d attempts", self.operation, self.retries)
            raise error
        floor = self.policy.concurrency_min_delay if error.code == _CONCURRENCY_CODE else 0.0
        wait = self.policy.delay(self.retries, floor=floor, retry_after=error.retry_after)
        elapsed = self.policy.clock() - self.started
        if elapsed + wait > self.policy.deadline:
            logger.debug("kling %s: deadline %.1f s reached, giving up", self.operation, self.policy.deadline)
            raise error
        logger.debug(
            "kling %s: retry %d in %.2f s (%s)", self.operation, self.retries, wait, type(error).__name__
        )
        await self.policy.sleep(wait)


class _State(enum.Enum):
    OPENED = "opened"
    CLOSED = "closed"


@contextlib.contextmanager
def _transport_errors(method: str, path: str, timeout: float) -> Iterator[None]:
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


def _read_envelope(response: Answer, *, where: str, not_found: bool) -> Any:
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


def _task_from(data: Any, *, where: str) -> TaskData:
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


def _id_segment(task_id: str) -> str:
    """``task_id`` as one escaped path segment: ``../x`` or ``a/b`` can never change the path."""
    if not isinstance(task_id, str) or not task_id.strip():
        raise KlingValidationError("task_id", task_id, "must be a non-empty task id or external task id")
    segment = quote(task_id, safe="")
    if set(segment) == {"."}:
        # "." and ".." survive quote() and would be folded away as dot segments by URL handling.
        segment = segment.replace(".", "%2E")
    return segment


class KlingClient:
    """Async client of the Omni-Image API. Use ``async with`` or call ``aclose()``.

    ``http`` may be injected (it is then left open on close); otherwise the client owns one.
    ``timeout`` is the per-request read/write/pool timeout in seconds (connect: at most 10 s).
    """

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        *,
        http: httpx2.AsyncClient | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        base = base_url.strip().rstrip("/")
        if not re.match(r"^https?://[^/\s]+", base):
            raise KlingConfigError(
                f"The Kling API base URL must be an http(s) URL, got {base_url!r}.",
                hint="Set KLING_API_BASE_URL to e.g. https://api-singapore.klingai.com.",
            )
        if timeout <= 0:
            raise KlingConfigError(f"The HTTP timeout must be positive, got {timeout!r} s.")
        self._base_url = base
        self._auth = auth
        self._timeout_seconds = float(timeout)
        self._timeout = httpx2.Timeout(timeout, connect=min(timeout, 10.0))
        self._retry = retry if retry is not None else RetryPolicy()
        self._user_agent = user_agent
        self._owns_http = http is None
        self._http = http if http is not None else httpx2.AsyncClient(timeout=self._timeout)
        self._state = _State.OPENED

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API base URL, without a trailing slash."""
        return self._base_url

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy reads and creates follow."""
        return self._retry

    @property
    def closed(self) -> bool:
        """True after ``aclose()``."""
        return self._state is _State.CLOSED

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it. Safe to call twice."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"KlingClient(base_url={self._base_url!r}, auth={self._auth.kind}, state={self._state.value})"

    # --- operations --------------------------------------------------------------------------

    async def create_task(self, req: CreateImageRequest) -> TaskData:
        """Create one task; returns its ``TaskData`` (carrying the ``external_task_id`` sent).

        The request is checked against ``kling.rules`` first: a broken rule raises
        ``KlingValidationError`` and nothing is sent. An ``external_task_id`` is generated when
        the request has none. When an attempt's fate is unknown (no answer, timeout, 5xx) the
        task is looked up by that id before the create is sent again; 1302/1303 answers (no
        task made) are retried with backoff. One call never makes two tasks.
        """
        validate_create_request(req)
        external_id = req.external_task_id or new_external_task_id()
        try:
            with anyio.fail_after(self.total_deadline):
                return await self._create(req, external_id)
        except TimeoutError:
            raise KlingTimeoutError(
                f"The Kling API did not confirm POST {OMNI_IMAGE_PATH} within {self.total_deadline:g} s, "
                "retries included.",
                hint=f"The task may still have been created: look it up by external_task_id {external_id!r} "
                "before creating it again.",
                retryable=True,
            ) from None

    async def _create(self, req: CreateImageRequest, external_id: str) -> TaskData:
        """The attempts of ``create_task`` (under its total deadline)."""
        body = req.model_copy(update={"external_task_id": external_id}).to_wire()
        where = f"POST {OMNI_IMAGE_PATH}"
        budget = _Budget(self._retry, "create")
        resigned = False
        in_doubt = False  # True once an earlier attempt may have made the task
        for attempt in range(1, self._retry.max_attempts + 2):  # +1: one re-signed auth retry
            try:
                data = await self._exchange("POST", OMNI_IMAGE_PATH, json_body=body, attempt=attempt)
                task = _task_from(data, where=where)
                return _with_external_id(task, external_id)
            except KlingAuthError as exc:
                # Authentication failed, so no task was made: resending is safe.
                if resigned or exc.code not in _RESIGN_CODES or not self._auth.invalidate():
                    raise
                resigned = True
            except KlingInvalidRequestError as exc:
                if in_doubt and exc.code == 1201:
                    # The resend collided with the task a lost attempt made (external ids are
                    # unique per account): that task is the answer.
                    found = await self._probe(external_id, attempt=attempt)
                    if found is not None:
                        return found
                raise
            except KlingRateLimitError as exc:
                await budget.pause(exc)  # 1302/1303: refused before any task was made
            except (KlingTransportError, KlingServerError, KlingResponseError) as exc:
                in_doubt = True
                found = await self._probe(external_id, attempt=attempt)
                if found is not None:
                    logger.debug("kling create: found task %s after %s", found.task_id, type(exc).__name__)
                    return found
                if not exc.retryable:
                    raise
                try:
                    await budget.pause(exc)
                except KlingError as final:
                    final.hint = (
                        f"{final.hint or ''} The task may still have been created: look it up by "
                        f"external_task_id {external_id!r} before creating it again."
                    ).strip()
                    raise
        raise AssertionError("unreachable: the retry budget ends the loop")  # pragma: no cover

    async def get_task(self, task_id_or_external_id: str) -> TaskData:
        """One task by its ``task_id`` or the caller's ``external_task_id``.

        Raises ``KlingTaskNotFoundError`` when neither matches (vendor code 1201).
        """
        path = f"{OMNI_IMAGE_PATH}/{_id_segment(task_id_or_external_id)}"
        data = await self._read(path, not_found=True)
        return _task_from(data, where=f"GET {path}")

    async def list_tasks(self, page: int = 1, page_size: int = 30) -> list[TaskData]:
        """One page of the account's tasks, newest first (``pageNum`` 1..1000, ``pageSize`` 1..500)."""
        for name, value, (low, high) in (
            ("page", page, PAGE_NUM_RANGE),
            ("page_size", page_size, PAGE_SIZE_RANGE),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise KlingValidationError(name, value, f"must be an integer between {low} and {high}")
        params = {"pageNum": str(page), "pageSize": str(page_size)}
        data = await self._read(OMNI_IMAGE_PATH, params=params)
        where = f"GET {OMNI_IMAGE_PATH}"
        if not isinstance(data, list):
            raise KlingResponseError(
                f"The Kling API answered {where} with 'data' of type {type(data).__name__}, expected a list."
            )
        tasks = []
        for position, item in enumerate(data[:page_size]):
            try:
                tasks.append(_task_from(item, where=where))
            except KlingResponseError as exc:
                # One unreadable row must not hide the others.
                logger.warning("kling list: skipped row %d: %r", position, exc.message)
        return tasks

    async def find_by_external_id(self, external_id: str) -> TaskData | None:
        """The task created with ``external_task_id`` == ``external_id``, or None.

        The vendor's query accepts a task id *or* an external id, so asking for an external id
        that equals another task's task id would return that other task: only a task whose
        external id really matches counts.
        """
        try:
            task = await self.get_task(external_id)
        except KlingTaskNotFoundError:
            return None
        if task.external_task_id == external_id:
            return task
        # The id named another task (its task_id); ours may still exist under that external id.
        # The newest page of the list is where a recent one is: one free request, rare case.
        for candidate in await self.list_tasks(page=1, page_size=_EXTERNAL_ID_SCAN):
            if candidate.external_task_id == external_id:
                return candidate
        return None

    async def get_account_costs(self, start_ms: int, end_ms: int) -> AccountCosts:
        """The account's resource packs (``GET /account/costs``; free, at most 1 query per second).

        ``start_ms``/``end_ms`` bound the period asked about, in ms since the epoch as the vendor
        requires. The figures may be up to 12 hours late.
        """
        if not 0 <= start_ms <= end_ms:
            raise KlingValidationError("start_ms", start_ms, "must be between 0 and end_ms")
        params = {"start_time": str(start_ms), "end_time": str(end_ms)}
        data = await self._read(ACCOUNT_COSTS_PATH, params=params)
        try:
            return AccountCosts.model_validate(data or {})
        except ValidationError as exc:
            raise KlingResponseError(
                f"The Kling API answered GET {ACCOUNT_COSTS_PATH} with data of an unexpected shape "
                f"({exc.error_count()} problem(s))."
            ) from None

    # --- plumbing ----------------------------------------------------------------------------

    @property
    def total_deadline(self) -> float:
        """Seconds one operation may take, every attempt and pause included.

        Each attempt is bounded by the HTTP timeout as a whole (not per read), and the retries by
        the policy's deadline; this caps both together so a call never outlives ~4 timeouts.
        """
        return min(self._retry.deadline, max(4 * self._timeout_seconds, 10.0))

    async def _read(self, path: str, *, params: dict[str, str] | None = None, not_found: bool = False) -> Any:
        """A GET within ``total_deadline``: see ``_read_attempts``."""
        try:
            with anyio.fail_after(self.total_deadline):
                return await self._read_attempts(path, params=params, not_found=not_found)
        except TimeoutError:
            raise KlingTimeoutError(
                f"The Kling API did not answer GET {path} within {self.total_deadline:g} s, "
                "retries included.",
                hint="The service may be slow or unreachable: try again shortly.",
                retryable=True,
            ) from None

    async def _read_attempts(
        self, path: str, *, params: dict[str, str] | None = None, not_found: bool = False
    ) -> Any:
        """A GET with retries on retryable failures and one re-signed retry on 1000/1004."""
        budget = _Budget(self._retry, f"GET {path}")
        resigned = False
        for attempt in range(1, self._retry.max_attempts + 2):  # +1: one re-signed auth retry
            try:
                return await self._exchange("GET", path, params=params, attempt=attempt, not_found=not_found)
            except KlingAuthError as exc:
                if resigned or exc.code not in _RESIGN_CODES or not self._auth.invalidate():
                    raise
                resigned = True
            except KlingError as exc:
                if not exc.retryable:
                    raise
                await budget.pause(exc)
        raise AssertionError("unreachable: the retry budget ends the loop")  # pragma: no cover

    async def _probe(self, external_id: str, *, attempt: int) -> TaskData | None:
        """After a create of unknown fate: the task made under ``external_id``, or None.

        None also when the lookup itself failed in a retryable way: sending the create again is
        then still safe, because the vendor refuses a second task with the same external id.
        """
        path = f"{OMNI_IMAGE_PATH}/{_id_segment(external_id)}"
        try:
            data = await self._exchange("GET", path, attempt=attempt, not_found=True)
        except KlingTaskNotFoundError:
            return None
        except KlingError as exc:
            if exc.retryable:
                return None
            raise
        task = _task_from(data, where=f"GET {path}")
        if task.external_task_id not in (None, external_id):
            return None  # the id matched another task's task_id, not our external id
        return _with_external_id(task, external_id)

    async def _exchange(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        attempt: int = 1,
        not_found: bool = False,
    ) -> Any:
        """One request and its answer's ``data``; every failure is a ``KlingError``."""
        if self._state is _State.CLOSED:
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
            with _transport_errors(method, path, self._timeout_seconds):
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
            data = _read_envelope(response, where=where, not_found=not_found)
        except KlingError as exc:
            # A vendor message or a proxy's error page may echo the credential we sent; the
            # error text reaches the model and its transcript, so it must not carry it.
            _scrub(exc, secrets)
            raise
        # The one place vendor data enters: every string leaves without our credentials,
        # control characters or escapes, and capped in length (kling.vendor_text).
        return clean_vendor_json(data, secrets)


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


def _with_external_id(task: TaskData, external_id: str) -> TaskData:
    """Make sure the task carries the external id it was created with."""
    if task.task_info.external_task_id:
        return task
    return task.model_copy(update={"task_info": TaskInfo(external_task_id=external_id)})


def _peek_request_id(response: Answer) -> str | None:
    """The envelope's ``request_id`` for the debug log, without failing on odd bodies."""
    match = re.search(rb'"request_id"\s*:\s*"([^"]{1,100})"', response.content[:4096])
    return match.group(1).decode("ascii", errors="replace") if match else None
