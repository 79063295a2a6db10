"""The typed async client of the Omni-Image API: create, query, list, account costs.

One ``httpx2.AsyncClient`` is shared by every call; every request carries a timeout; reads are
retried with exponential backoff and jitter inside a bounded number of attempts and an overall
deadline (``kling.retry``). A create is never re-sent blindly: each one carries an
``external_task_id`` and, when its fate is unknown (no answer, a 5xx), the task is looked up by
that id before anything is sent again, so one ``create_task`` call never makes two tasks
(``kling.create_once``).

Errors are translated in two places only, both in ``kling._exchange``: ``transport_errors``
(httpx2 exceptions) and ``read_envelope`` (what the vendor answered). See ``kling.errors`` for
the hierarchy.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import httpx2
from pydantic import ValidationError

from kling_omni_mcp import __version__
from kling_omni_mcp.kling._exchange import Exchanger, task_from
from kling_omni_mcp.kling.account import ACCOUNT_COSTS_PATH, AccountCosts
from kling_omni_mcp.kling.auth import Auth
from kling_omni_mcp.kling.create_once import create_once
from kling_omni_mcp.kling.errors import (
    KlingConfigError,
    KlingResponseError,
    KlingTaskNotFoundError,
    KlingTimeoutError,
    KlingValidationError,
)
from kling_omni_mcp.kling.models import OMNI_IMAGE_PATH, CreateImageRequest, TaskData, task_path
from kling_omni_mcp.kling.retry import RetryPolicy, retry_read
from kling_omni_mcp.kling.rules import validate_create_request

__all__ = ["DEFAULT_USER_AGENT", "OMNI_IMAGE_PATH", "KlingClient", "RetryPolicy", "new_external_task_id"]

logger = logging.getLogger(__name__)

DEFAULT_USER_AGENT = f"kling-omni-mcp/{__version__}"
PAGE_NUM_RANGE = (1, 1000)
PAGE_SIZE_RANGE = (1, 500)
#: Tasks scanned for an external id that the vendor's query resolved to another task's task_id.
_EXTERNAL_ID_SCAN = 100


def new_external_task_id() -> str:
    """A fresh id for ``external_task_id``: the idempotency key of one create call."""
    return f"kom-{uuid.uuid4().hex}"


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
        self._owns_http = http is None
        self._http = http if http is not None else httpx2.AsyncClient(timeout=self._timeout)
        self._exchanger = Exchanger(
            base,
            auth,
            self._http,
            timeout_seconds=self._timeout_seconds,
            timeout=self._timeout,
            user_agent=user_agent,
        )

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
        return self._exchanger.closed

    async def aclose(self) -> None:
        """Close the HTTP client if this client created it. Safe to call twice."""
        if self._exchanger.closed:
            return
        self._exchanger.close()
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
        state = "closed" if self.closed else "opened"
        return f"KlingClient(base_url={self._base_url!r}, auth={self._auth.kind}, state={state})"

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
                body = req.model_copy(update={"external_task_id": external_id}).to_wire()
                return await create_once(
                    self._exchanger, body, external_id, policy=self._retry, resign=self._auth.invalidate
                )
        except TimeoutError:
            raise KlingTimeoutError(
                f"The Kling API did not confirm POST {OMNI_IMAGE_PATH} within {self.total_deadline:g} s, "
                "retries included.",
                hint=f"The task may still have been created: look it up by external_task_id {external_id!r} "
                "before creating it again.",
                retryable=True,
            ) from None

    async def get_task(self, task_id_or_external_id: str) -> TaskData:
        """One task by its ``task_id`` or the caller's ``external_task_id``.

        Raises ``KlingTaskNotFoundError`` when neither matches (vendor code 1201).
        """
        path = task_path(task_id_or_external_id)
        data = await self._read(path, not_found=True)
        return task_from(data, where=f"GET {path}")

    async def list_tasks(self, page: int = 1, page_size: int = 30) -> list[TaskData]:
        """One page of the account's tasks, newest first (``pageNum`` 1..1000, ``pageSize`` 1..500)."""
        _check_page(page, page_size)
        params = {"pageNum": str(page), "pageSize": str(page_size)}
        data = await self._read(OMNI_IMAGE_PATH, params=params)
        return self._rows(data, page_size)

    @staticmethod
    def _rows(data: Any, page_size: int) -> list[TaskData]:
        """A list answer's rows as tasks; one unreadable row is skipped, not fatal."""
        where = f"GET {OMNI_IMAGE_PATH}"
        if not isinstance(data, list):
            raise KlingResponseError(
                f"The Kling API answered {where} with 'data' of type {type(data).__name__}, expected a list."
            )
        tasks = []
        for position, item in enumerate(data[:page_size]):
            try:
                tasks.append(task_from(item, where=where))
            except KlingResponseError as exc:
                # One unreadable row must not hide the others.
                logger.warning("kling list: skipped row %d: %r", position, exc.message)
        return tasks

    async def list_matching(
        self,
        keys: Collection[str],
        *,
        page: int,
        page_size: int,
        previous: Mapping[str, Any] | None = None,
    ) -> ListMatch:
        """The rows of one list page whose ``task_id`` or external id is in ``keys``.

        Only those rows are cleaned and validated: a sweep of 500 tasks for a few of them must not
        pay for all (``kling.status_sweep``). A row exactly as it was in ``previous`` (the last
        call's ``raw``) is not even that: its keys come back in ``unchanged``, for the caller to
        reuse what it made of it last time.
        """
        _check_page(page, page_size)
        found = ListMatch(held=0, tasks=[], unchanged=[], raw={})

        def pick(data: Any) -> Any:
            # Runs on the raw answer (again on a retry): it only compares values.
            found.raw.clear()
            found.unchanged.clear()
            if not isinstance(data, list):
                return data
            found.held = min(len(data), page_size)
            kept = []
            for row in data[:page_size]:
                matched = [key for key in _row_keys(row) if key in keys]
                if not matched:
                    continue
                for key in matched:
                    found.raw[key] = row
                if previous is not None and any(previous.get(key) == row for key in matched):
                    found.unchanged.extend(matched)
                else:
                    kept.append(row)
            return kept

        params = {"pageNum": str(page), "pageSize": str(page_size)}
        data = await self._read(OMNI_IMAGE_PATH, params=params, select=pick)
        found.tasks.extend(self._rows(data, page_size))
        return found

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

    async def _read(
        self,
        path: str,
        *,
        params: dict[str, str] | None = None,
        not_found: bool = False,
        select: Callable[[Any], Any] | None = None,
    ) -> Any:
        """A GET within ``total_deadline``, retried (``kling.retry.retry_read``)."""
        try:
            with anyio.fail_after(self.total_deadline):
                return await retry_read(
                    lambda attempt: self._exchanger.send(
                        "GET", path, params=params, attempt=attempt, not_found=not_found, select=select
                    ),
                    policy=self._retry,
                    resign=self._auth.invalidate,
                    operation=f"GET {path}",
                )
        except TimeoutError:
            raise KlingTimeoutError(
                f"The Kling API did not answer GET {path} within {self.total_deadline:g} s, "
                "retries included.",
                hint="The service may be slow or unreachable: try again shortly.",
                retryable=True,
            ) from None


@dataclass
class ListMatch:
    """What ``KlingClient.list_matching`` found on one page."""

    #: Rows the page held (fewer than the page size: the last page).
    held: int
    #: The wanted rows that are new or changed since ``previous``: cleaned and validated.
    tasks: list[TaskData]
    #: Wanted keys whose row is exactly as in ``previous``.
    unchanged: list[str]
    #: Wanted key → its raw row (never shown anywhere), to pass back as ``previous``.
    raw: dict[str, Any]


def _check_page(page: int, page_size: int) -> None:
    for name, value, (low, high) in (
        ("page", page, PAGE_NUM_RANGE),
        ("page_size", page_size, PAGE_SIZE_RANGE),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise KlingValidationError(name, value, f"must be an integer between {low} and {high}")


def _row_keys(row: Any) -> set[str]:
    """A raw list row's task id and external id (as text), to pick rows before cleaning them."""
    if not isinstance(row, dict):
        return set()
    info = row.get("task_info")
    external = info.get("external_task_id") if isinstance(info, dict) else None
    return {str(value) for value in (row.get("task_id"), external) if value is not None}
