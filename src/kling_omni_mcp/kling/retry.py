"""When a failed vendor call is tried again: bounded attempts, exponential backoff, a deadline.

``RetryPolicy`` is the knob callers set (``KlingClient(retry=...)``); ``RetryBudget`` counts one
operation's attempts and time against it. Which failures are retryable is decided by the error
itself (``KlingError.retryable``); this module only decides how long to wait and when to stop.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from kling_omni_mcp.kling.errors import KlingAuthError, KlingError

__all__ = ["CONCURRENCY_CODE", "RESIGN_CODES", "RetryBudget", "RetryPolicy", "retry_read"]

# Logged under the client's name, as before this module was split out of it: operators filter
# the client's retries by that name.
logger = logging.getLogger("kling_omni_mcp.kling.client")

T = TypeVar("T")

# 1000 (auth failed) and 1004 (expired) may come from a stale or clock-skewed token: one fresh
# signature is worth a try. 1001-1003 cannot be fixed by re-signing.
RESIGN_CODES = frozenset({1000, 1004})
# 1303 (concurrency over the pack's limit) asks for backoff starting at >= 1 s.
CONCURRENCY_CODE = 1303


@dataclass(frozen=True)
class RetryPolicy:
    """How retryable failures are retried: bounded attempts, exponential backoff, a deadline.

    ``deadline`` bounds the whole operation: no new attempt starts once the next pause would end
    past it. ``sleep`` and ``clock`` are injectable so tests can run without waiting.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 8.0
    deadline: float = 60.0
    jitter: bool = True
    #: Smallest pause after a 1303 (concurrency limit); the vendor asks for >= 1 s.
    concurrency_min_delay: float = 1.0
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, compare=False)
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.deadline <= 0:
            raise ValueError("delays must be >= 0 and the deadline > 0")

    def delay(self, retry: int, *, floor: float = 0.0, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry).

        Exponential from ``max(base_delay, floor)``, capped at ``max_delay``; with jitter, a random
        point in the upper half ("equal jitter"), so clients spread out but still back off. A
        server's ``Retry-After`` raises the pause (never past ``max_delay``).
        """
        start = max(self.base_delay, floor)
        pause = min(self.max_delay, start * 2.0 ** max(0, retry - 1))
        if self.jitter:
            pause *= 0.5 + random.random() / 2
        if retry_after is not None:
            pause = max(pause, min(retry_after, self.max_delay))
        return max(pause, min(floor, self.max_delay))


class RetryBudget:
    """Attempts and time spent by one operation under a ``RetryPolicy``."""

    def __init__(self, policy: RetryPolicy, operation: str) -> None:
        self.policy = policy
        self.operation = operation
        self.started = policy.clock()
        self.retries = 0

    async def pause(self, error: KlingError) -> None:
        """Sleep before the next attempt, or re-raise ``error`` when attempts or time run out."""
        self.retries += 1
        if self.retries >= self.policy.max_attempts:
            logger.debug("kling %s: giving up after %d attempts", self.operation, self.retries)
            raise error
        floor = self.policy.concurrency_min_delay if error.code == CONCURRENCY_CODE else 0.0
        wait = self.policy.delay(self.retries, floor=floor, retry_after=error.retry_after)
        elapsed = self.policy.clock() - self.started
        if elapsed + wait > self.policy.deadline:
            logger.debug("kling %s: deadline %.1f s reached, giving up", self.operation, self.policy.deadline)
            raise error
        logger.debug(
            "kling %s: retry %d in %.2f s (%s)", self.operation, self.retries, wait, type(error).__name__
        )
        await self.policy.sleep(wait)


async def retry_read(
    attempt: Callable[[int], Awaitable[T]],
    *,
    policy: RetryPolicy,
    resign: Callable[[], bool],
    operation: str,
) -> T:
    """Run ``attempt(n)`` until it succeeds, retrying retryable failures under ``policy``.

    For reads only (a read changes nothing, so repeating it is always safe). An auth failure
    with code 1000/1004 is retried once right away when ``resign()`` drops the cached token.
    """
    budget = RetryBudget(policy, operation)
    resigned = False
    for number in range(1, policy.max_attempts + 2):  # +1: one re-signed auth retry
        try:
            return await attempt(number)
        except KlingAuthError as exc:
            if resigned or exc.code not in RESIGN_CODES or not resign():
                raise
            resigned = True
        except KlingError as exc:
            if not exc.retryable:
                raise
            await budget.pause(exc)
    raise AssertionError("unreachable: the retry budget ends the loop")  # pragma: no cover
