"""``POST /callbacks/kling``: the vendor's status callbacks, taken only as a hint to re-query.

Order of checks, cheapest and least revealing first: the route exists only when
``KLING_PUBLIC_URL`` is set (404 otherwise); Host/Origin as for ``/mcp`` (DNS rebinding); a
bounded body; the Standard Webhooks signature when a secret is configured; a replayed
``webhook-id`` is acknowledged and ignored; at most one wake-up per task per second, however
many callbacks arrive. Every accepted body gets the same answer whether or not the task is
watched here, so the route is no oracle of which task ids this server knows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kling_omni_mcp.kling.callbacks import CallbackNotice, parse_callback
from kling_omni_mcp.server.app import ServiceSlot

__all__ = [
    "CALLBACK_BODY_LIMIT",
    "WAKE_INTERVAL_SECONDS",
    "WEBHOOK_TOLERANCE_SECONDS",
    "ReplayMemory",
    "WakeThrottle",
    "callback_endpoint",
]

logger = logging.getLogger(__name__)

#: Callback bodies are small JSON documents; anything larger is refused unread.
CALLBACK_BODY_LIMIT = 256 * 1024
#: Standard Webhooks (and the standardwebhooks package): a timestamp further off than this is refused.
WEBHOOK_TOLERANCE_SECONDS = 5 * 60
#: Callback-triggered vendor queries: at most one per task per this many seconds.
WAKE_INTERVAL_SECONDS = 1.0
#: Bounds on the route's memory, whatever a flood of callbacks holds.
MAX_REMEMBERED_IDS = 20_000
MAX_THROTTLED_TASKS = 20_000

#: The one answer every accepted callback gets (known task, unknown task, replay, throttled).
_ACCEPTED = b'{"ok":true}'


class ReplayMemory:
    """``webhook-id``s seen within the signature's tolerance window, at most ``capacity`` of them.

    A signed delivery stays verifiable for up to twice the tolerance after it arrives (its
    timestamp may be that far ahead of our clock), so ids are kept that long.
    """

    def __init__(
        self,
        *,
        keep_seconds: float = 2 * WEBHOOK_TOLERANCE_SECONDS,
        capacity: int = MAX_REMEMBERED_IDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keep = keep_seconds
        self._capacity = capacity
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first_time(self, message_id: str) -> bool:
        """Record ``message_id``; True when it was not seen within the window."""
        now = self._clock()
        while self._seen and (next(iter(self._seen.values())) <= now or len(self._seen) >= self._capacity):
            self._seen.popitem(last=False)
        if message_id in self._seen:
            return False
        self._seen[message_id] = now + self._keep
        return True


class WakeThrottle:
    """At most one wake-up per task per ``interval`` seconds; a later one is deferred, not lost.

    A task's final callback often follows its previous one within a second: dropping it would
    leave the waiter to its next poll, so the first callback inside the interval is deferred to
    the interval's end and any more are dropped (one is already coming). The first callback
    with a final status wakes the task at once even inside the interval (deferring it cost short
    tasks a second: docs/benchmarks.md), so a task sees at most one query per interval plus that
    one. Memory is bounded.
    """

    def __init__(
        self,
        *,
        interval: float = WAKE_INTERVAL_SECONDS,
        capacity: int = MAX_THROTTLED_TASKS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._capacity = capacity
        self._clock = clock
        #: Each task (by its first-seen id) -> the earliest time its next wake-up may happen.
        self._next: OrderedDict[str, float] = OrderedDict()
        #: Every id seen -> the task's first-seen id, so a task id and its external id are one task.
        self._alias: OrderedDict[str, str] = OrderedDict()
        self._pending: set[str] = set()
        #: Tasks whose final-status callback already had its immediate wake-up.
        self._finished: OrderedDict[str, None] = OrderedDict()

    def _task(self, keys: tuple[str, ...]) -> str:
        task = next((self._alias[key] for key in keys if key in self._alias), keys[0] if keys else "")
        for key in keys:
            self._alias[key] = task
            self._alias.move_to_end(key)
        while len(self._alias) > 2 * self._capacity:
            self._alias.popitem(last=False)
        return task

    def admit(self, keys: tuple[str, ...], *, final: bool = False) -> float | None:
        """Seconds to wait before waking the task (0: now), or None to drop this wake-up."""
        now = self._clock()
        task = self._task(keys)
        if final and task not in self._finished:
            self._finished[task] = None
            while len(self._finished) > self._capacity:
                self._finished.popitem(last=False)
            self._next[task] = max(self._next.get(task, now), now + self._interval)
            self._next.move_to_end(task)
            return 0.0
        if task in self._pending:
            return None
        while self._next and len(self._next) >= self._capacity:
            self._next.popitem(last=False)
        delay = max(0.0, self._next.get(task, now) - now)
        self._next[task] = now + delay + self._interval
        self._next.move_to_end(task)
        if delay > 0:
            self._pending.add(task)
        return delay

    def done(self, keys: tuple[str, ...]) -> None:
        """A deferred wake-up happened."""
        self._pending.discard(self._task(keys))


def _accepted() -> Response:
    return Response(_ACCEPTED, media_type="application/json")


def _verify_signature(secret: str, body: bytes, headers: dict[str, str]) -> str | None:
    """None when the Standard Webhooks signature is valid and fresh; otherwise why not."""
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError as exc:
        return str(exc) or "invalid signature"
    except Exception:
        return "malformed signature headers"
    return None


async def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it grows past ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _first_everywhere(slot: ServiceSlot, message_id: str) -> bool:
    """True unless another replica already accepted this delivery (the store is shared with
    Redis; in one process it is this process's memory, which ``ReplayMemory`` already covers)."""
    service = slot.current
    if service is None or service.shared is None:
        return True
    return await service.shared.remember_once(f"webhook:{message_id}", 2 * WEBHOOK_TOLERANCE_SECONDS)


def callback_endpoint(
    *,
    enabled: bool,
    secret: str | None,
    security: TransportSecuritySettings,
    slot: ServiceSlot,
) -> Callable[[Request], Awaitable[Response]]:
    """The route's endpoint; ``secret`` is the one signatures must match (None: unsigned accepted)."""
    guard = TransportSecurityMiddleware(security)
    replays = ReplayMemory()
    throttle = WakeThrottle()

    def wake(notice: CallbackNotice) -> None:
        throttle.done(notice.keys)
        service = slot.current
        woke = service is not None and service.on_callback(notice)
        outcome = "woke its watcher" if woke else "ignored"
        logger.info("Callback for task %r (%r): %s", notice.keys, notice.status, outcome)

    async def callback(request: Request) -> Response:
        if not enabled:
            return JSONResponse({"error": "not found"}, status_code=404)
        refused = await guard.validate_request(request, is_post=False)
        if refused is not None:
            return refused
        body = await _read_limited(request, CALLBACK_BODY_LIMIT)
        if body is None:
            return JSONResponse({"error": f"body over {CALLBACK_BODY_LIMIT} bytes"}, status_code=413)
        if secret is not None:
            headers = {k.lower(): v for k, v in request.headers.items()}
            problem = _verify_signature(secret, body, headers)
            if problem is not None:
                logger.warning("Refused a callback: %s", problem)
                return JSONResponse({"error": "invalid signature"}, status_code=401)
            message_id = headers.get("webhook-id", "")
            if not replays.first_time(message_id) or not await _first_everywhere(slot, message_id):
                logger.info("Ignored a replayed callback delivery")
                return _accepted()
        notice = parse_callback(body)
        if notice is None:
            return JSONResponse({"error": "not a task callback body"}, status_code=400)
        delay = throttle.admit(notice.keys, final=notice.final)
        if delay == 0:
            wake(notice)
        elif delay is not None:
            asyncio.get_running_loop().call_later(delay, wake, notice)
        return _accepted()

    return callback
