"""Callback delivery: POST each status change of a task to its ``callback_url``.

One asyncio task per task with a callback walks the task's timeline and posts the query-shaped
``data`` whenever the status changes. With a webhook secret the POST is signed the Standard
Webhooks way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``). Failures are logged
and recorded, never raised: the vendor does not document retries, so there are none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import httpx2

from .state import FINAL_STATUSES, CallbackRecord, Counters, TaskRecord

__all__ = ["CallbackSender"]

logger = logging.getLogger(__name__)

#: Longest sleep between looks at a task, so a forced failure is noticed promptly.
_MAX_NAP = 0.25
#: A callback loop gives up this long after its task should have ended.
_GRACE = 60.0
_STOP_TIMEOUT = 5.0


class CallbackSender:
    """Owns the HTTP client and the per-task delivery loops."""

    def __init__(
        self,
        counters: Counters,
        *,
        webhook_secret: str | None,
        timeout: float,
        max_workers: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counters = counters
        self._webhook = None
        if webhook_secret:
            # Imported here: only signed callbacks need it, and start-up should not wait for it.
            from standardwebhooks import Webhook

            self._webhook = Webhook(webhook_secret)
        self._timeout = timeout
        self._max_workers = max_workers
        self._clock = clock
        self._client: httpx2.AsyncClient | None = None
        self._workers: set[asyncio.Task[None]] = set()

    @property
    def active(self) -> int:
        """Delivery loops still running."""
        return len(self._workers)

    def schedule(self, task: TaskRecord, base_url: str) -> None:
        """Start posting ``task``'s status changes (its ``callback_url`` must be set)."""
        if len(self._workers) >= self._max_workers:
            logger.warning("callback for task %s skipped: %d deliveries in flight", task.task_id, self.active)
            return
        worker = asyncio.get_running_loop().create_task(
            self._follow(task, base_url), name=f"kling-sim-callback:{task.task_id}"
        )
        self._workers.add(worker)
        worker.add_done_callback(self._workers.discard)

    async def _follow(self, task: TaskRecord, base_url: str) -> None:
        posted: str | None = None
        give_up = task.created_mono + task.duration + _GRACE
        while self._clock() < give_up:
            now = self._clock()
            status = task.status_at(now)
            if status != posted:
                await self._post(task, task.to_data(base_url, now))
                posted = status
            if status in FINAL_STATUSES:
                return
            wake = task.next_change_at(self._clock())
            nap = _MAX_NAP if wake is None else min(_MAX_NAP, max(0.0, wake - self._clock()))
            await asyncio.sleep(nap)

    def _headers(self, payload: str) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self._webhook is not None:
            msg_id = f"msg_{uuid.uuid4().hex}"
            stamp = datetime.now(tz=UTC)
            headers["webhook-id"] = msg_id
            headers["webhook-timestamp"] = str(int(stamp.timestamp()))
            headers["webhook-signature"] = self._webhook.sign(msg_id, stamp, payload)
        return headers

    async def _post(self, task: TaskRecord, data: dict[str, object]) -> None:
        url = task.spec.callback_url
        if url is None:
            return
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        if self._client is None:
            self._client = httpx2.AsyncClient(timeout=self._timeout, follow_redirects=False)
        http_status: int | None = None
        error: str | None = None
        try:
            response = await self._client.post(url, content=payload.encode(), headers=self._headers(payload))
            http_status = response.status_code
        except httpx2.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
            logger.warning("callback to %s for task %s failed: %s", url, task.task_id, error)
        status = str(data.get("task_status"))
        signed = self._webhook is not None
        self._counters.callbacks.append(CallbackRecord(url, task.task_id, status, http_status, error, signed))

    def cancel_all(self) -> None:
        """Stop every delivery loop without waiting (used by a reset)."""
        for worker in list(self._workers):
            worker.cancel()

    async def aclose(self) -> None:
        """Stop every delivery loop and close the HTTP client."""
        workers = list(self._workers)
        for worker in workers:
            worker.cancel()
        if workers:
            # asyncio.wait neither raises the workers' errors nor waits for ever.
            await asyncio.wait(workers, timeout=_STOP_TIMEOUT)
        self._workers.clear()
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
