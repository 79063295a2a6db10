"""Which replicas have waiters on a task: marks in Redis that lapse by themselves.

The poll lease of a task is given up when the last waiter *anywhere* leaves, so the replica
holding it must know whether another replica still has waiters on the task. Each such replica
keeps a mark in the sorted set ``kling-omni-mcp:waiting:<task>``: member = its replica name,
score = when the mark lapses, in milliseconds of Redis's own clock (``TIME`` inside the script),
so no replica's clock is ever compared with another's. A replica refreshes its mark while it
waits and removes it when its waiters leave; the mark of one that dies stops counting after its
lifetime, and the set expires with its newest mark.
"""

from __future__ import annotations

from redis.asyncio import Redis

__all__ = ["WaitingMarks"]

# KEYS[1]: the task's set of marks. ARGV[1]: this replica. ARGV[2]: the mark's lifetime in ms,
# or 0 to only look. Drops lapsed marks, then answers how many other replicas' marks are live.
_MARK_SCRIPT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
local life = tonumber(ARGV[2])
if life > 0 then
  redis.call('ZADD', KEYS[1], ms + life, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], life)
end
local others = redis.call('ZCARD', KEYS[1])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  others = others - 1
end
return others
"""


class WaitingMarks:
    """This replica's marks on tasks' waiting sets (Redis errors propagate to the caller)."""

    def __init__(self, redis: Redis, replica: str, lifetime_seconds: float) -> None:
        self._redis = redis
        self._replica = replica
        self._lifetime_ms = max(1, int(lifetime_seconds * 1000))
        self._script = redis.register_script(_MARK_SCRIPT)

    async def mark(self, key: str) -> None:
        """Set or refresh this replica's mark in the set ``key``; it lapses unless refreshed."""
        await self._script(keys=[key], args=[self._replica, self._lifetime_ms])

    async def unmark(self, key: str) -> None:
        """Remove this replica's mark from the set ``key``."""
        await self._redis.zrem(key, self._replica)

    async def others(self, key: str) -> int:
        """How many other replicas have a live mark in the set ``key``."""
        return int(await self._script(keys=[key], args=[self._replica, 0]))
