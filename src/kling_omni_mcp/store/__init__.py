"""Shared state behind one seam: in this process (the default) or in Redis (``KLING_REDIS_URL``).

Everything several replicas of the server must agree on goes through a ``StateStore``:

- **task records**: the latest state of each task and its aliases (the external id), kept as
  long as the vendor keeps the task (30 days);
- **the poll lease**: which process polls a task (``lead``/``release``), which processes still
  have waiters on it (``want``/``unwant``/``wanted_elsewhere``: the lease is kept while any
  has), and the events that tell the others (``publish``: a new state, "poll now" after a
  callback, "the lease is free");
- **the callback replay memory** (``remember_once``), **the save lock** (``save_lock``) and
  **the spending ledger** (``ledger``).

``MemoryStore`` is what one process needs (this process always leads; nothing is shared).
``RedisStore`` (``store/redis_store.py``) shares it all, and falls back to the in-process
behaviour while Redis is unreachable: Redis trouble slows nothing down but the sharing.
Nothing above this seam knows which one runs; ``open_state_store`` picks it from the settings.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.ledger import Ledger

__all__ = [
    "TASK_RETENTION_SECONDS",
    "EventKind",
    "StateStore",
    "TaskEvent",
    "open_state_store",
]

#: The vendor keeps a task (and its result links) for 30 days; so do the shared records.
TASK_RETENTION_SECONDS = 30 * 24 * 3600

#: ``state``: a new task state; ``wake``: poll now (a callback arrived); ``released``: the
#: poll lease is free (its holder's waiters left), another waiting process may take it.
EventKind = Literal["state", "wake", "released"]


@dataclass(frozen=True)
class TaskEvent:
    """One message about a task between processes (``key``: the id its watchers use)."""

    key: str
    kind: EventKind
    task: TaskData | None = None

    def encode(self, sender: str) -> str:
        """The wire form: JSON with the sender, so a process can skip its own messages."""
        task = self.task.model_dump(mode="json", by_alias=True) if self.task is not None else None
        return json.dumps({"from": sender, "key": self.key, "kind": self.kind, "task": task})

    @staticmethod
    def decode(raw: str | bytes) -> tuple[str, TaskEvent] | None:
        """``(sender, event)``, or None for a message this version does not understand."""
        try:
            data = json.loads(raw)
            kind = data["kind"]
            if kind not in ("state", "wake", "released"):
                return None
            task = TaskData.model_validate(data["task"]) if data.get("task") is not None else None
            return str(data["from"]), TaskEvent(str(data["key"]), kind, task)
        except (ValueError, KeyError, TypeError):
            return None


#: Told of every event another process published, from the store's listener.
OnEvent = Callable[[TaskEvent], None]


class StateStore(Protocol):
    """What the watchers, the result recorder, the callback route and the budget share."""

    #: Seconds between lease renewals while leading (``inf``: the lease never lapses).
    renew_seconds: float

    def status(self) -> str:
        """One phrase for ``/healthz``: ``local``, ``redis`` or ``local (redis unreachable)``."""
        ...

    def on_event(self, handler: OnEvent) -> None:
        """Call ``handler`` with each event another process publishes (one handler)."""
        ...

    async def lead(self, key: str) -> bool:
        """Take or renew the poll lease of ``key``; True when this process should poll it."""
        ...

    async def release(self, key: str) -> None:
        """Give the lease of ``key`` up (this process stops polling it) and say so."""
        ...

    async def want(self, key: str) -> None:
        """Mark that this process has waiters on ``key``; the mark lapses by itself a few
        seconds after it was last refreshed (Redis: ``LEASE_SECONDS``)."""
        ...

    async def unwant(self, key: str) -> None:
        """Remove this process's mark on ``key`` (its waiters left)."""
        ...

    async def wanted_elsewhere(self, key: str) -> bool:
        """True while another live process has waiters on ``key`` (its mark has not lapsed)."""
        ...

    async def publish(self, event: TaskEvent) -> None:
        """Tell the other processes (never fails: sharing is best effort)."""
        ...

    async def put_task(self, task: TaskData) -> None:
        """Record the task's latest state and its aliases."""
        ...

    async def get_task(self, key: str) -> TaskData | None:
        """The recorded state of a task by its id or an alias, if any."""
        ...

    async def resolve(self, key: str) -> str:
        """The task id an alias (an external id) stands for, or ``key`` itself."""
        ...

    async def remember_once(self, key: str, ttl_seconds: float) -> bool:
        """True the first time ``key`` is seen within ``ttl_seconds`` (callback replay memory)."""
        ...

    def save_lock(self, task_id: str) -> AbstractAsyncContextManager[None]:
        """Held while one process saves a task's results (the others then find the files)."""
        ...

    @property
    def ledger(self) -> Ledger:
        """The spending ledger every process counts in."""
        ...


@asynccontextmanager
async def open_state_store(settings: Settings, folder: Path) -> AsyncIterator[StateStore]:
    """The store the settings ask for, open for the life of the server.

    ``folder`` holds the file ledger (the in-process store's, and Redis's fallback).
    """
    from kling_omni_mcp.store.memory import MemoryStore

    local = MemoryStore(folder)
    if settings.redis_url is None:
        yield local
        return
    # Imported here: the redis package costs start-up time only when it is used.
    from kling_omni_mcp.store.redis_store import RedisStore

    async with RedisStore.open(settings.redis_url.get_secret_value(), fallback=local) as shared:
        yield shared
