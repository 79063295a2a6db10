"""The in-process ``StateStore``: one server alone, which is what runs without ``KLING_REDIS_URL``.

This process always holds every lease (there is nobody to share polling with), publishes to
nobody, and keeps no task records: in one process the live watcher is the record, and the
vendor is asked again after it ends, as before. The replay memory and the save locks live in
this process's memory; the spending ledger is the file beside the results (``FileLedger``),
which several processes on one folder already share.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

from kling_omni_mcp.keyed_locks import KeyedLocks
from kling_omni_mcp.ledger import FileLedger, Ledger
from kling_omni_mcp.store.solo import SoloLease

__all__ = ["REPLAY_MEMORY_LIMIT", "MemoryStore"]

#: Webhook ids remembered at once; the oldest are forgotten first beyond this (bounded memory).
REPLAY_MEMORY_LIMIT = 50_000


class MemoryStore(SoloLease):
    """``StateStore`` for one process; also what ``RedisStore`` falls back to. Its lease side is
    ``SoloLease``'s: it always leads, publishes to nobody and keeps no task records."""

    def __init__(self, folder: Path) -> None:
        self._ledger = FileLedger(folder)
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._save_locks = KeyedLocks()

    def status(self) -> str:
        return "local"

    async def remember_once(self, key: str, ttl_seconds: float) -> bool:
        now = time.monotonic()
        # Entries are kept in insertion order, so the expired ones are at the front.
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < REPLAY_MEMORY_LIMIT:
                break
            del self._seen[oldest]
        known = self._seen.get(key)
        if known is not None and known > now:
            return False
        self._seen[key] = now + ttl_seconds
        self._seen.move_to_end(key)
        return True

    def save_lock(self, task_id: str) -> AbstractAsyncContextManager[None]:
        return self._hold(task_id)

    @asynccontextmanager
    async def _hold(self, task_id: str) -> AsyncIterator[None]:
        async with self._save_locks.hold(task_id):
            yield

    @property
    def ledger(self) -> Ledger:
        return self._ledger
