"""The simulated vendor's HTTP surface: routes, the envelope, auth and validation glue.

The vendor's own routes are handled here; the test-control routes live in ``admin``, body
reading in ``body``, the rules in ``validation``.

Routes (``{id}`` is a task id or an external task id)::

    POST /v1/images/omni-image           create a task
    GET  /v1/images/omni-image/{id}      query one task
    GET  /v1/images/omni-image           list tasks, newest first (pageNum, pageSize)
    GET  /account/costs                  resource packs (start_time, end_time in ms; 1 query/s)
    GET  /results/{task_id}/{i}.png      a result file (``{i}-watermark.png``: watermarked)
    POST /admin/faults                   arm a fault            (no vendor auth: test control)
    GET  /admin/counters                 what the simulator saw
    POST /admin/reset                    forget tasks, counters and faults
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator
from itertools import islice
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import contract as c
from .account import ACCOUNT_COSTS_PATH, account_costs
from .admin import AdminHandlers, Endpoint, local_only
from .auth import check_authorization
from .body import parse_json_body, read_body
from .connection import ConnectionControl, abort_after_response, drop_answer
from .envelope import ApiError, envelope_response, error_response
from .validation import validate_create

if TYPE_CHECKING:
    from .sim import Simulator

__all__ = ["build_app"]

logger = logging.getLogger(__name__)

_RESULT_NAME = re.compile(r"^(\d{1,2})(-watermark)?\.png$")
_INLINE_WORK_BYTES = 1024 * 1024
_HTML_ERROR_PAGE = (
    b"<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
    b"<body><h1>502 Bad Gateway</h1><p>The CDN could not reach the origin (simulated).</p></body></html>"
)


class _SimulatorApp(Starlette):
    """Starlette with one outer layer that can lose an answer or cut a connection on request."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        await ConnectionControl().run(super().__call__, scope, receive, send)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _page_param(request: Request, name: str, default: int, bounds: tuple[int, int]) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    low, high = bounds
    value = int(raw) if re.fullmatch(r"[0-9]{1,7}", raw) else None
    if value is None or not low <= value <= high:
        raise ApiError(400, 1200, f"{name}: must be an integer from {low} to {high} (got {raw[:20]!r})")
    return value


class _Handlers:
    """The route handlers, sharing one ``Simulator``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    # --- shared steps ---------------------------------------------------------------------------
    async def _delay(self, kind: str) -> None:
        seconds = self.sim.faults.take_delay(kind)
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _injected_failure(self, kind: str) -> None:
        failure = self.sim.faults.take_failure(kind)
        if failure is not None:
            self.sim.counters.faults_served += 1
            raise ApiError(failure.http_status, failure.code, failure.message)

    def _authenticate(self, request: Request) -> None:
        config = self.sim.config
        check_authorization(
            request.headers.get("authorization"), api_keys=config.api_keys, access_keys=config.access_keys
        )

    # --- vendor API -------------------------------------------------------------------------------
    async def create(self, request: Request) -> Response:
        sim = self.sim
        sim.counters.create_requests += 1
        await self._delay("create")
        raw = await read_body(request, sim.config.max_body_bytes)
        parsed: Any = None
        parse_error: ApiError | None = None
        # Big bodies (Base64 images) are parsed and measured off the event loop.
        offload = len(raw) > _INLINE_WORK_BYTES
        try:
            parsed = await anyio.to_thread.run_sync(parse_json_body, raw) if offload else parse_json_body(raw)
        except ApiError as exc:
            parse_error = exc
        # Count the attempt before any fault: a test asks "how often was this create sent?".
        external = parsed.get("external_task_id") if isinstance(parsed, dict) else None
        if isinstance(external, str) and external:
            sim.counters.creates_by_external_id[external] += 1
        self._injected_failure("create")
        self._authenticate(request)
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if content_type != "application/json" and not content_type.endswith("+json"):
            raise ApiError(400, 1200, f"Content-Type must be application/json (got {content_type!r})")
        if parse_error is not None:
            raise parse_error
        spec = await anyio.to_thread.run_sync(validate_create, parsed) if offload else validate_create(parsed)
        if spec.external_task_id is not None and sim.store.external_id_taken(spec.external_task_id):
            raise ApiError(
                400,
                1201,
                f"external_task_id: {spec.external_task_id!r} is already used by another task of this "
                "account; it must be unique: query that task by this id, or choose a new id",
            )
        limit = sim.faults.concurrency_limit
        if limit is not None:
            held = sim.store.unfinished_slots(sim.clock())
            if held + spec.image_count > limit:
                raise ApiError(
                    429,
                    1303,
                    f"Concurrency limit exceeded: {held} image slots in use, this task needs "
                    f"{spec.image_count}, the resource pack allows {limit}; retry after running tasks finish",
                )
        task = sim.create_task(spec, parsed, _base_url(request))
        if sim.faults.take_lost_create():
            logger.info("losing the answer to the create of task %s (fault)", task.task_id)
            drop_answer(request.scope)
        return envelope_response(task.create_data())

    async def create_or_list(self, request: Request) -> Response:
        if request.method == "POST":
            return await self.create(request)
        return await self.list_tasks(request)

    async def query(self, request: Request) -> Response:
        sim = self.sim
        task_id = str(request.path_params["task_id"])
        sim.counters.queries += 1
        sim.counters.queries_by_id[task_id] += 1
        await self._delay("query")
        self._injected_failure("query")
        self._authenticate(request)
        task = sim.store.get(task_id)
        if task is None:
            raise ApiError(400, 1201, "Task not found by id/external id")
        return envelope_response(task.to_data(_base_url(request), sim.clock()))

    async def list_tasks(self, request: Request) -> Response:
        sim = self.sim
        sim.counters.lists += 1
        await self._delay("list")
        self._injected_failure("list")
        self._authenticate(request)
        page = _page_param(request, "pageNum", 1, c.PAGE_NUM_RANGE)
        size = _page_param(request, "pageSize", 30, c.PAGE_SIZE_RANGE)
        base, now = _base_url(request), sim.clock()
        chosen = islice(sim.store.newest_first(), (page - 1) * size, page * size)
        return envelope_response([task.to_data(base, now) for task in chosen])

    async def account(self, request: Request) -> Response:
        self._authenticate(request)
        return await account_costs(self.sim, request)

    # --- result files (the vendor's CDN) ----------------------------------------------------------
    async def download(self, request: Request) -> Response:
        sim = self.sim
        sim.counters.downloads += 1
        sim.counters.downloads_by_path[request.url.path] += 1
        await self._delay("download")
        self._injected_failure("download")
        task = sim.store.tasks.get(str(request.path_params["task_id"]))
        match = _RESULT_NAME.match(str(request.path_params["name"]))
        if task is None or match is None or task.status_at(sim.clock()) != "succeed":
            raise ApiError(404, 1203, "Result file not found")
        index, watermark = int(match.group(1)), match.group(2) is not None
        if index >= task.spec.image_count:
            raise ApiError(404, 1203, "Result file not found")
        fault = sim.faults.take_download_fault()
        if fault == "html":
            return HTMLResponse(_HTML_ERROR_PAGE, status_code=200)
        data = await sim.render(task, index, watermark=watermark)
        if fault == "cut":
            return _TruncatedResponse(data, keep=len(data) // 2)
        return Response(data, media_type="image/png", headers={"cache-control": "private, max-age=86400"})


class _TruncatedResponse(Response):
    """Announces the full length, sends ``keep`` bytes, then has the connection cut."""

    def __init__(self, data: bytes, *, keep: int) -> None:
        super().__init__(data, media_type="image/png")
        self._keep = keep

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.body[: self._keep], "more_body": True})
        abort_after_response(scope)


def _guard(endpoint: Endpoint) -> Endpoint:
    """Turn refusals into the envelope and any bug into a 500/5000 envelope, never a crash."""

    async def guarded(request: Request) -> Response:
        try:
            return await endpoint(request)
        except ApiError as exc:
            return error_response(exc)
        except Exception:
            logger.exception("simulator error on %s %s", request.method, request.url.path)
            return error_response(ApiError(500, 5000, "Internal error (simulator)"))

    return guarded


async def _http_exception(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 405:
        allowed = exc.headers.get("Allow", "") if isinstance(exc, HTTPException) and exc.headers else ""
        # The vendor's table: invalid method is HTTP 404 with code 1202.
        message = f"Invalid method {request.method} for {request.url.path} (allowed: {allowed})"
        return error_response(ApiError(404, 1202, message, headers={"allow": allowed} if allowed else None))
    if status == 404:
        return error_response(ApiError(404, 1203, f"Resource not found: {request.url.path}"))
    return error_response(ApiError(status, 1200 if status < 500 else 5000, f"HTTP {status}"))


async def _server_error(request: Request, exc: Exception) -> Response:
    logger.error("simulator error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(ApiError(500, 5000, "Internal error (simulator)"))


def build_app(sim: Simulator) -> Starlette:
    """The Starlette app serving ``sim``; its lifespan stops callbacks on shutdown."""
    h = _Handlers(sim)
    admin = AdminHandlers(sim)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await sim.aclose()

    routes = [
        # One route for both methods, so a wrong method's answer names both in "allowed".
        Route("/v1/images/omni-image", _guard(h.create_or_list), methods=["GET", "POST"]),
        Route("/v1/images/omni-image/{task_id}", _guard(h.query), methods=["GET"]),
        Route(ACCOUNT_COSTS_PATH, _guard(h.account), methods=["GET"]),
        Route("/results/{task_id}/{name}", _guard(h.download), methods=["GET"]),
        Route("/admin/faults", _guard(local_only(sim, admin.faults)), methods=["POST"]),
        Route("/admin/counters", _guard(local_only(sim, admin.counters)), methods=["GET"]),
        Route("/admin/reset", _guard(local_only(sim, admin.reset)), methods=["POST"]),
    ]
    app = _SimulatorApp(
        routes=routes,
        exception_handlers={HTTPException: _http_exception, Exception: _server_error},
        lifespan=lifespan,
    )
    # The vendor answers a trailing slash with an error, not a redirect.
    app.router.redirect_slashes = False
    return app
