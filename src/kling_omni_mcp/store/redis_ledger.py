"""The spending ledger in Redis: one hash per UTC day, ``kling-omni-mcp:ledger:<day>``.

Each field is one create's key, its value the units booked. ``reserve`` checks the day's total
against the ceiling and books in one Lua script, because two replicas reserving at once must
not both pass the ceiling (a read-then-write from Python could interleave). The ``Ledger``
interface is blocking (``Spending`` calls it from a worker thread), so this uses the
synchronous client. While Redis is unreachable the file ledger beside the results counts
instead: a budget that counts a little apart for a while beats refusing every create.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from kling_omni_mcp.ledger import Ledger, Reservation

__all__ = ["LEDGER_TTL_SECONDS", "RedisLedger"]

logger = logging.getLogger(__name__)

#: A day's hash outlives the day by a month (the file ledger keeps 31 days too).
LEDGER_TTL_SECONDS = 32 * 24 * 3600
#: Unreachable, too slow or refusing: count in the file meanwhile.
_DOWN_ERRORS = (RedisError, OSError)

# KEYS[1] the day's hash; ARGV: create key, units, ceiling (-1: none), ttl seconds.
_RESERVE = """
local before = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  if entries[i] ~= ARGV[1] then before = before + tonumber(entries[i + 1]) end
end
local ceiling = tonumber(ARGV[3])
if ceiling >= 0 and before + tonumber(ARGV[2]) > ceiling then return {0, before} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return {1, before}
"""


class RedisLedger:
    """``Ledger`` shared by every replica; ``fallback`` counts while Redis is unreachable."""

    def __init__(self, url: str, *, fallback: Ledger, timeout: float) -> None:
        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1)
        )
        self._fallback = fallback
        self._reserve = self._redis.register_script(_RESERVE)
        self._warned = False

    def close(self) -> None:
        """Close the connections."""
        self._redis.close()

    @staticmethod
    def _key(day: str) -> str:
        return f"kling-omni-mcp:ledger:{day}"

    def _down(self, exc: Exception) -> None:
        if not self._warned:
            logger.warning("Redis is unreachable (%s): counting in the file ledger", type(exc).__name__)
            self._warned = True

    def spent(self, day: str) -> int:
        try:
            values: list[Any] = self._redis.hvals(self._key(day))  # type: ignore[assignment]
        except _DOWN_ERRORS as exc:
            self._down(exc)
            return self._fallback.spent(day)
        self._warned = False
        return sum(int(v) for v in values)

    def reserve(self, day: str, key: str, units: int, ceiling: int | None) -> Reservation:
        try:
            limit = -1 if ceiling is None else ceiling
            args: list[str | int] = [key, units, limit, LEDGER_TTL_SECONDS]
            accepted, before = self._reserve(keys=[self._key(day)], args=args)
        except _DOWN_ERRORS as exc:
            self._down(exc)
            return self._fallback.reserve(day, key, units, ceiling)
        return Reservation(accepted=bool(accepted), spent_before=int(before))

    def release(self, day: str, key: str) -> None:
        try:
            self._redis.hdel(self._key(day), key)
        except _DOWN_ERRORS as exc:
            self._down(exc)
            self._fallback.release(day, key)
