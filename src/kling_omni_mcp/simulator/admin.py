"""The simulator's test-control routes (``/admin/...``): arm faults, read counters, reset.

They carry no vendor auth, so they answer only to a loopback Host and Origin (or a configured
admin host): a web page the user visits must not reach them through DNS rebinding.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from .body import parse_json_body, read_body
from .envelope import ApiError, envelope_response

if TYPE_CHECKING:
    from .sim import Simulator

__all__ = ["AdminHandlers", "Endpoint", "local_only"]

_ADMIN_BODY_LIMIT = 64 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


class AdminHandlers:
    """The test-control handlers, sharing one ``Simulator``."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim

    async def faults(self, request: Request) -> Response:
        body = parse_json_body(await read_body(request, _ADMIN_BODY_LIMIT))
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            raise ApiError(400, 1200, 'body must be a JSON object with an "action" string')
        params = {k: v for k, v in body.items() if k != "action"}
        try:
            _apply_admin_action(self.sim, body["action"], params)
        except (TypeError, ValueError, KeyError) as exc:
            raise ApiError(400, 1201, f"action {body['action']!r}: {exc}") from None
        return envelope_response({"armed": self.sim.faults.armed()})

    async def counters(self, request: Request) -> Response:
        data = self.sim.counters.as_dict()
        data["tasks"] = self.sim.task_count()
        data["armed"] = self.sim.faults.armed()
        return envelope_response(data)

    async def reset(self, request: Request) -> Response:
        self.sim.reset()
        return envelope_response({"reset": True})


def _apply_admin_action(sim: Simulator, action: str, params: dict[str, Any]) -> None:
    faults = sim.faults
    if "status" in params:  # a friendlier spelling for curl users
        params["http_status"] = params.pop("status")
    actions: dict[str, Callable[..., object]] = {
        "fail_next": faults.fail_next,
        "delay_next": faults.delay_next,
        "lose_next_create": faults.lose_next_create,
        "cut_next_downloads": faults.cut_next_downloads,
        "html_next_downloads": faults.html_next_downloads,
        "fail_next_tasks": faults.fail_next_tasks,
        "fail_task": lambda id, **kw: sim.fail_task(str(id), **kw),
        "set_concurrency_limit": faults.set_concurrency_limit,
        "clear": faults.clear,
    }
    if action not in actions:
        raise ValueError(f"unknown action; use one of {', '.join(actions)}")
    actions[action](**params)


def _host_allowed(sim: Simulator, netloc: str) -> bool:
    """Loopback names and addresses, or one of the configured admin hosts (any port)."""
    host = urlsplit(f"//{netloc}").hostname or ""
    if host in ("localhost", *sim.config.admin_hosts):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def local_only(sim: Simulator, endpoint: Endpoint) -> Endpoint:
    """The test-control routes answer only to loopback Host/Origin: a web page the user visits
    must not be able to reach them through DNS rebinding (no vendor auth guards them)."""

    async def checked(request: Request) -> Response:
        origin = request.headers.get("origin")
        if not _host_allowed(sim, request.headers.get("host", "")) or (
            origin is not None and not _host_allowed(sim, urlsplit(origin).netloc)
        ):
            raise ApiError(403, 1200, "The /admin routes answer only to a loopback Host and Origin.")
        return await endpoint(request)

    return checked
