"""The Redis ``StateStore``: several replicas share task records, one poller per task, callbacks.

Keys are ``kling-omni-mcp:<kind>:<id>`` and every one expires:

=============================  ===================================  ==========================
key                            holds                                expires
=============================  ===================================  ==========================
``…:lease:<task>``             the poller's lock token (redis Lock)  ``LEASE_SECONDS``, renewed
``…:waiting:<task>``           replicas with waiters (sorted set)    ``LEASE_SECONDS``, renewed
``…:task:<task_id>``           the task's latest state (JSON)        30 days (vendor retention)
``…:alias:<external_id>``      the task id it stands for             30 days
``…:replay:<webhook_id>``      a callback already accepted           the caller's TTL
``…:save:<task_id>``           the result saver's lock token         ``SAVE_LOCK_SECONDS``
``…:ledger:<day>``             units per create (hash)               ``redis_ledger``
=============================  ===================================  ==========================

Events go over pub/sub on ``…:events:<task>``; every replica listens with one pattern
subscription and hands each event to its watcher of that task, if it has one.

**Redis trouble is not an outage.** A connection error or timeout marks the store *down*
(logged once): until a background probe reaches Redis again (backoff from 0.5 s to 5 s), every
call answers from the in-process store, so each replica leads (polls) its own tasks, as a lone
server does; then the store is *up* again (logged), and the next lease renewal sorts out who
polls. ``/healthz`` shows which (``status()``).

(Longer than most modules: each method is the Redis side of one ``StateStore`` method with its
fallback; the waiting marks' script is in ``redis_waiting.py``, the ledger in ``redis_ledger.py``.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import LockError, RedisError

from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.ledger import Ledger
from kling_omni_mcp.store import TASK_RETENTION_SECONDS, OnEvent, TaskEvent
from kling_omni_mcp.store.memory import MemoryStore
from kling_omni_mcp.store.redis_waiting import WaitingMarks

__all__ = ["KEY_PREFIX", "LEASE_SECONDS", "RENEW_SECONDS", "RedisStore"]

logger = logging.getLogger(__name__)

KEY_PREFIX = "kling-omni-mcp"
#: A poller that stops renewing (killed, partitioned) loses its lease after this long.
LEASE_SECONDS = 5.0
#: The poller renews its lease this often; followers look for a free lease as often.
RENEW_SECONDS = 1.5
#: Every Redis command, and every connect, gives up after this long (then: local fallback).
COMMAND_TIMEOUT_SECONDS = 2.0
#: A result save holds its lock at most this long (downloads are bounded at 60 s each).
SAVE_LOCK_SECONDS = 300.0
#: How long another replica waits for a running save before saving on its own.
SAVE_WAIT_SECONDS = 120.0
_PROBE_FIRST, _PROBE_MAX = 0.5, 5.0
#: Errors after which this process stops relying on Redis until the probe reaches it again:
#: unreachable, too slow, or refusing commands (out of memory, a read-only replica...).
_DOWN_ERRORS = (RedisError, OSError)


def _key(kind: str, ident: str) -> str:
    return f"{KEY_PREFIX}:{kind}:{ident}"


def replica_name() -> str:
    """A name unique to this process, for its lease tokens and its own events."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


class RedisStore:
    """``StateStore`` on Redis, answering from ``fallback`` while Redis is unreachable."""

    renew_seconds = RENEW_SECONDS

    def __init__(self, redis: Redis, url: str, *, fallback: MemoryStore) -> None:
        self._redis = redis
        self._fallback = fallback
        self.replica = replica_name()
        self._leases: dict[str, Lock] = {}
        self._waiting = WaitingMarks(redis, self.replica, LEASE_SECONDS)
        self._handler: OnEvent | None = None
        self._up = True
        self._back = anyio.Event()
        self._back.set()
        self._gone = anyio.Event()
        from kling_omni_mcp.store.redis_ledger import RedisLedger

        self._ledger = RedisLedger(url, fallback=fallback.ledger, timeout=COMMAND_TIMEOUT_SECONDS)

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, fallback: MemoryStore) -> AsyncIterator[RedisStore]:
        """Connect (lazily: a Redis that is down at start-up is only a fallback) and listen."""
        redis = Redis.from_url(
            url,
            socket_timeout=COMMAND_TIMEOUT_SECONDS,
            socket_connect_timeout=COMMAND_TIMEOUT_SECONDS,
            health_check_interval=10,
            # One retry on a fresh connection (a pooled one may be stale after a Redis restart);
            # the library's default backs off for seconds, and a call must fail fast here.
            retry=Retry(NoBackoff(), 1),
        )
        store = cls(redis, url, fallback=fallback)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(store._listen, name="redis-store:listen")
                tg.start_soon(store._probe, name="redis-store:probe")
                try:
                    yield store
                finally:
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(COMMAND_TIMEOUT_SECONDS):
                await store._release_all()
                await redis.aclose()
            store._ledger.close()

    # --- health --------------------------------------------------------------------------------

    def status(self) -> str:
        return "redis" if self._up else "local (redis unreachable)"

    @property
    def up(self) -> bool:
        """True while Redis answers."""
        return self._up

    def _down(self, exc: BaseException) -> None:
        if self._up:
            # Once per outage: each replica polls its own tasks until Redis is back.
            what = type(exc).__name__
            logger.warning("Redis is unreachable (%s): polling tasks in this process until it is back", what)
            self._up = False
            self._leases.clear()
            self._back = anyio.Event()
            self._gone.set()

    async def _probe(self) -> None:
        """While Redis is down, try it again with a growing pause; mark it up when it answers."""
        while True:
            await self._gone.wait()
            pause = _PROBE_FIRST
            while not self._up:
                await anyio.sleep(pause)
                try:
                    await self._redis.ping()
                    # Connections opened before the outage are dead: start afresh.
                    await self._redis.connection_pool.disconnect()
                except Exception:  # still down (or the client failed oddly): try again later
                    pause = min(_PROBE_MAX, pause * 2)
                    continue
                logger.warning("Redis is reachable again: sharing task state with the other replicas")
                self._up = True
                self._gone = anyio.Event()
                self._back.set()

    async def _listen(self) -> None:
        """Hand every other replica's events to the handler; re-subscribe after an outage."""
        while True:
            await self._back.wait()
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.psubscribe(_key("events", "*"))
                    while self._up:
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None and message.get("type") == "pmessage":
                            self._dispatch(message["data"])
            except _DOWN_ERRORS as exc:
                self._down(exc)
                await anyio.sleep(_PROBE_FIRST)
            except Exception as exc:
                # Whatever the client library raises, this replica keeps serving (polling alone).
                logger.exception("Listening for other replicas' events failed")
                self._down(exc)
                await anyio.sleep(_PROBE_FIRST)

    def _dispatch(self, raw: bytes) -> None:
        decoded = TaskEvent.decode(raw)
        if decoded is None:
            return
        sender, event = decoded
        if sender != self.replica and self._handler is not None:
            try:
                self._handler(event)
            except Exception:
                # One bad handler call must not stop this replica hearing the others.
                logger.exception("Handling a shared event for task %s failed", event.key)

    def on_event(self, handler: OnEvent) -> None:
        self._handler = handler

    # --- the poll lease ------------------------------------------------------------------------

    async def lead(self, key: str) -> bool:
        if not self._up:
            return True
        try:
            lock = self._leases.get(key)
            if lock is not None:
                try:
                    await lock.reacquire()
                    return True
                except LockError:
                    self._leases.pop(key, None)  # it lapsed and someone else took it
            lock = Lock(self._redis, _key("lease", key), timeout=LEASE_SECONDS, thread_local=False)
            if await lock.acquire(blocking=False, token=f"{self.replica}:{secrets.token_hex(4)}"):
                self._leases[key] = lock
                return True
            return False
        except _DOWN_ERRORS as exc:
            self._down(exc)
            return True

    async def release(self, key: str) -> None:
        lock = self._leases.pop(key, None)
        if lock is None or not self._up:
            return
        try:
            with contextlib.suppress(LockError):
                await lock.release()
        except _DOWN_ERRORS as exc:
            self._down(exc)
            return
        await self.publish(TaskEvent(key, "released"))

    async def _release_all(self) -> None:
        for key in list(self._leases):
            await self.release(key)

    # --- who waits where (the lease is kept while any replica has waiters) ---------------------

    async def want(self, key: str) -> None:
        if not self._up:
            return
        try:
            await self._waiting.mark(_key("waiting", key))
        except _DOWN_ERRORS as exc:
            self._down(exc)

    async def unwant(self, key: str) -> None:
        if not self._up:
            return
        try:
            await self._waiting.unmark(_key("waiting", key))
        except _DOWN_ERRORS as exc:
            self._down(exc)

    async def wanted_elsewhere(self, key: str) -> bool:
        if not self._up:
            return False
        try:
            return await self._waiting.others(_key("waiting", key)) > 0
        except _DOWN_ERRORS as exc:
            self._down(exc)
            return False

    async def publish(self, event: TaskEvent) -> None:
        if not self._up:
            return
        try:
            await self._redis.publish(_key("events", event.key), event.encode(self.replica))
        except _DOWN_ERRORS as exc:
            self._down(exc)

    # --- task records --------------------------------------------------------------------------

    async def put_task(self, task: TaskData) -> None:
        if not self._up:
            return
        body = task.model_dump_json(by_alias=True)
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(_key("task", task.task_id), body, ex=TASK_RETENTION_SECONDS)
                if task.external_task_id:
                    pipe.set(_key("alias", task.external_task_id), task.task_id, ex=TASK_RETENTION_SECONDS)
                await pipe.execute()
        except _DOWN_ERRORS as exc:
            self._down(exc)

    async def get_task(self, key: str) -> TaskData | None:
        if not self._up:
            return None
        try:
            raw = await self._redis.get(_key("task", await self.resolve(key)))
        except _DOWN_ERRORS as exc:
            self._down(exc)
            return None
        if raw is None:
            return None
        try:
            return TaskData.model_validate_json(raw)
        except ValueError:
            return None

    async def resolve(self, key: str) -> str:
        if not self._up:
            return key
        try:
            found = await self._redis.get(_key("alias", key))
        except _DOWN_ERRORS as exc:
            self._down(exc)
            return key
        return found.decode() if isinstance(found, bytes) else key

    # --- replay memory, save lock, ledger --------------------------------------------------------

    async def remember_once(self, key: str, ttl_seconds: float) -> bool:
        if self._up:
            try:
                ms = max(1, int(ttl_seconds * 1000))
                return bool(await self._redis.set(_key("replay", key), b"1", nx=True, px=ms))
            except _DOWN_ERRORS as exc:
                self._down(exc)
        return await self._fallback.remember_once(key, ttl_seconds)

    def save_lock(self, task_id: str) -> AbstractAsyncContextManager[None]:
        return self._save_lock(task_id)

    @asynccontextmanager
    async def _save_lock(self, task_id: str) -> AsyncIterator[None]:
        async with self._fallback.save_lock(task_id):
            lock: Lock | None = None
            if self._up:
                candidate = Lock(
                    self._redis,
                    _key("save", task_id),
                    timeout=SAVE_LOCK_SECONDS,
                    blocking_timeout=SAVE_WAIT_SECONDS,
                    thread_local=False,
                )
                try:
                    if await candidate.acquire():
                        lock = candidate
                except LockError:
                    pass  # waited long enough: save here too (the files are placed atomically)
                except _DOWN_ERRORS as exc:
                    self._down(exc)
            try:
                yield
            finally:
                if lock is not None:
                    with anyio.CancelScope(shield=True), contextlib.suppress(LockError, *_DOWN_ERRORS):
                        await lock.release()

    @property
    def ledger(self) -> Ledger:
        return self._ledger
