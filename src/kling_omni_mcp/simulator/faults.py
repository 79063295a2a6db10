"""Faults a test (or a person through ``/admin/faults``) can inject into the simulator.

Each fault is armed for the next N matching requests and disarmed as they are consumed. Request
kinds are ``create``, ``query``, ``list`` (the vendor's API) and ``download`` (result files, which
the vendor serves from a CDN): a fault armed without a kind matches the three API kinds only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "DownloadFault", "Failure", "Faults"]

KINDS = ("create", "query", "list", "download")
_API_KINDS = ("create", "query", "list")
#: No single arming may exceed this, so a typo cannot arm a fault for ever.
_MAX_COUNT = 100_000
_MAX_DELAY = 600.0

DownloadFault = str  # "cut" (body ends early) or "html" (an HTML error page with status 200)


@dataclass(frozen=True)
class Failure:
    """An answer to give instead of the real one."""

    http_status: int
    code: int
    message: str


@dataclass
class _Armed:
    remaining: int
    kind: str | None


@dataclass
class _ArmedFailure(_Armed):
    failure: Failure


@dataclass
class _ArmedDelay(_Armed):
    seconds: float


def _check_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_COUNT:
        raise ValueError(f"count must be an integer from 1 to {_MAX_COUNT}, got {count!r}")
    return count


def _check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)} or omitted, got {kind!r}")
    return kind


def _take_first(queue: list[list[Any]]) -> Any:
    if not queue:
        return None
    entry = queue[0]
    entry[1] -= 1
    if entry[1] <= 0:
        queue.pop(0)
    return entry[0]


def _matches(armed: _Armed, kind: str) -> bool:
    return armed.kind == kind if armed.kind is not None else kind in _API_KINDS


class Faults:
    """The armed faults. Methods named ``fail_*``/``delay_*``/... arm; ``take_*`` consume."""

    def __init__(self, concurrency_limit: int | None = None) -> None:
        self._default_limit = concurrency_limit
        self.concurrency_limit = concurrency_limit
        self._failures: list[_ArmedFailure] = []
        self._delays: list[_ArmedDelay] = []
        self._lost_creates = 0
        # [fault, remaining] and [message, remaining], consumed first-armed first.
        self._downloads: list[list[Any]] = []
        self._task_failures: list[list[Any]] = []

    # --- arming -------------------------------------------------------------------------------
    def fail_next(
        self,
        count: int = 1,
        *,
        http_status: int = 503,
        code: int = 5001,
        message: str = "Service under maintenance",
        kind: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (of ``kind``) with this status, code and message."""
        if not 100 <= http_status <= 599:
            raise ValueError(f"http_status must be an HTTP status code, got {http_status!r}")
        failure = Failure(http_status, code, message)
        self._failures.append(_ArmedFailure(_check_count(count), _check_kind(kind), failure))

    def delay_next(self, count: int = 1, *, seconds: float, kind: str | None = None) -> None:
        """Hold the next ``count`` answers (of ``kind``) back for ``seconds``."""
        if not 0 <= seconds <= _MAX_DELAY:
            raise ValueError(f"seconds must be from 0 to {_MAX_DELAY:.0f}, got {seconds!r}")
        self._delays.append(_ArmedDelay(_check_count(count), _check_kind(kind), seconds))

    def lose_next_create(self, count: int = 1) -> None:
        """Create the next ``count`` tasks for real, then drop the connection without an answer."""
        self._lost_creates += _check_count(count)

    def cut_next_downloads(self, count: int = 1) -> None:
        """Send only part of the next ``count`` downloads' bodies, then close the connection."""
        self._downloads.append(["cut", _check_count(count)])

    def html_next_downloads(self, count: int = 1) -> None:
        """Answer the next ``count`` downloads with an HTML error page, status 200."""
        self._downloads.append(["html", _check_count(count)])

    def fail_next_tasks(self, count: int = 1, *, message: str = "Content policy violation") -> None:
        """Make the next ``count`` created tasks end ``failed`` with ``message``."""
        self._task_failures.append([message, _check_count(count)])

    def set_concurrency_limit(self, limit: int | None) -> None:
        """Cap the unfinished image slots (``None`` lifts the cap)."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
        self.concurrency_limit = limit

    def clear(self) -> None:
        """Disarm everything; the concurrency cap returns to the configured one."""
        self.concurrency_limit = self._default_limit
        self._failures.clear()
        self._delays.clear()
        self._lost_creates = 0
        self._downloads.clear()
        self._task_failures.clear()

    # --- consuming ----------------------------------------------------------------------------
    def take_failure(self, kind: str) -> Failure | None:
        """The failure to answer this request with, if one is armed for its kind."""
        for armed in self._failures:
            if _matches(armed, kind):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._failures.remove(armed)
                return armed.failure
        return None

    def take_delay(self, kind: str) -> float:
        """Seconds to hold this answer back (0 when no delay is armed)."""
        for armed in self._delays:
            if _matches(armed, kind):
                armed.remaining -= 1
                if armed.remaining <= 0:
                    self._delays.remove(armed)
                return armed.seconds
        return 0.0

    def take_lost_create(self) -> bool:
        """True when this create's answer must be lost."""
        if self._lost_creates > 0:
            self._lost_creates -= 1
            return True
        return False

    def take_download_fault(self) -> DownloadFault | None:
        """``"cut"``, ``"html"`` or None for this download."""
        fault = _take_first(self._downloads)
        return None if fault is None else str(fault)

    def take_task_failure(self) -> str | None:
        """The failure message for a task being created, if one is armed."""
        message = _take_first(self._task_failures)
        return None if message is None else str(message)

    def armed(self) -> dict[str, object]:
        """What is armed, for ``GET /admin/counters``."""
        return {
            "failures": [
                {"remaining": a.remaining, "kind": a.kind, **a.failure.__dict__} for a in self._failures
            ],
            "delays": [
                {"remaining": a.remaining, "kind": a.kind, "seconds": a.seconds} for a in self._delays
            ],
            "lost_creates": self._lost_creates,
            "downloads": [{"fault": f, "remaining": n} for f, n in self._downloads],
            "task_failures": [{"message": m, "remaining": n} for m, n in self._task_failures],
            "concurrency_limit": self.concurrency_limit,
        }
