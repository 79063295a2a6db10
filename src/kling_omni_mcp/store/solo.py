"""The lease side of a store for a process alone: it always leads and shares nothing.

What a ``WatcherRegistry`` uses when it is given no ``StateStore`` (unit tests, tools that
build a registry by hand): exactly the single-process behaviour.
"""

from __future__ import annotations

from collections.abc import Callable

from kling_omni_mcp.kling.models import TaskData
from kling_omni_mcp.store import TaskEvent

__all__ = ["SoloLease"]


class SoloLease:
    """The lease side of a store for a process alone: it always leads and shares nothing."""

    renew_seconds = float("inf")

    def on_event(self, handler: Callable[[TaskEvent], None]) -> None:
        return None

    async def lead(self, key: str) -> bool:
        return True

    async def release(self, key: str) -> None:
        return None

    async def want(self, key: str) -> None:
        return None

    async def unwant(self, key: str) -> None:
        return None

    async def wanted_elsewhere(self, key: str) -> bool:
        return False

    async def publish(self, event: TaskEvent) -> None:
        return None

    async def put_task(self, task: TaskData) -> None:
        return None

    async def get_task(self, key: str) -> TaskData | None:
        return None

    async def resolve(self, key: str) -> str:
        return key
