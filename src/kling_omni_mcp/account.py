"""``get_account``: the account's resource packs, cached, and never asked more than once a second.

The vendor's ``GET /account/costs`` is free but allows one query per second, and its figures are
up to 12 hours late anyway: so answers are cached for 60 s, concurrent callers share one query
(single flight: they wait on one lock and find the fresh cache), and queries are spaced at least
one second apart even when the cache is empty or a query failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
from pydantic import BaseModel, Field

from kling_omni_mcp.answers import iso_time
from kling_omni_mcp.budget import Spending
from kling_omni_mcp.kling.account import AccountCosts
from kling_omni_mcp.kling.client import KlingClient

__all__ = ["CACHE_SECONDS", "DELAY_NOTE", "AccountAnswer", "AccountReader", "PackInfo"]

CACHE_SECONDS = 60.0
#: The vendor allows 1 query per second; a little more keeps clock jitter on the safe side.
MIN_QUERY_INTERVAL = 1.05
#: Packs that ended earlier than this are of no interest; the vendor needs a window in ms.
LOOKBACK_DAYS = 365
DELAY_NOTE = "The vendor's figures can be up to 12 hours late: recent tasks may not be deducted yet."

_STATUS_WORDS = {
    "toBeOnline": "not yet active",
    "online": "active",
    "expired": "expired",
    "runOut": "used up",
}


class PackInfo(BaseModel):
    """One resource pack, in plain words."""

    name: str
    status: str  # active, not yet active, used up or expired
    remaining_units: float
    total_units: float
    expires_at: str | None = None


class AccountAnswer(BaseModel):
    """The account's packs and today's spending by this server."""

    packs: list[PackInfo]
    remaining_units_active: float  # over active packs
    fetched_at: str
    units_today: int  # estimated units this server created today (UTC)
    daily_budget_left: int | None = None
    notes: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        """The short text the model reads first."""
        lines = [
            f"{len(self.packs)} resource pack(s); {self.remaining_units_active:g} units left in active packs"
            + "."
        ]
        for pack in self.packs:
            until = f", expires {pack.expires_at}" if pack.expires_at else ""
            left = f"{pack.remaining_units:g} of {pack.total_units:g} units left"
            lines.append(f"- {pack.name}: {left}, {pack.status}{until}")
        lines.extend(self.notes)
        return "\n".join(lines)


def _pack(raw: AccountCosts, index: int) -> PackInfo:
    pack = raw.resource_pack_subscribe_infos[index]
    return PackInfo(
        name=pack.resource_pack_name or pack.resource_pack_id or f"pack {index + 1}",
        status=_STATUS_WORDS.get(pack.status, pack.status or "unknown"),
        remaining_units=pack.remaining_quantity,
        total_units=pack.total_quantity,
        expires_at=iso_time(pack.invalid_time),
    )


class AccountReader:
    """Reads ``GET /account/costs`` at most once a second and serves a 60-second cache."""

    def __init__(
        self,
        client: Callable[[], KlingClient],
        spending: Spending,
        *,
        simulated: bool = False,
        cache_seconds: float = CACHE_SECONDS,
        min_interval: float = MIN_QUERY_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._spending = spending
        self._simulated = simulated
        self._cache_seconds = cache_seconds
        self._min_interval = min_interval
        self._clock = clock
        self._lock = anyio.Lock()
        self._cached: tuple[float, float, AccountCosts] | None = None  # (monotonic, wall, costs)
        self._last_query: float | None = None
        #: Vendor queries sent, for tests and the doctor.
        self.queries = 0

    async def _costs(self) -> tuple[float, float, AccountCosts]:
        async with self._lock:  # single flight: later callers find the cache this one filled
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < self._cache_seconds:
                return self._cached
            client = self._client()
            if self._last_query is not None:
                wait = self._last_query + self._min_interval - now
                if wait > 0:
                    await anyio.sleep(wait)
            self.queries += 1
            wall_ms = int(time.time() * 1000)
            start_ms = wall_ms - LOOKBACK_DAYS * 86_400_000
            try:
                costs = await client.get_account_costs(start_ms, wall_ms)
            finally:
                # Spaced from the previous *answer*, not its sending: a request sent one second
                # after another can still arrive sooner than that when the first one was slow.
                self._last_query = self._clock()
            self._cached = (self._clock(), time.time(), costs)
            return self._cached

    async def get(self) -> AccountAnswer:
        """The packs (from the cache when it is under 60 s old) and today's spending."""
        fetched_mono, fetched_wall, costs = await self._costs()
        packs = [_pack(costs, i) for i in range(len(costs.resource_pack_subscribe_infos))]
        today = await self._spending.today()
        age = max(self._clock() - fetched_mono, 0.0)
        notes = [DELAY_NOTE, today.sentence()]
        if age >= 1:
            notes.append(f"Cached answer, {age:.0f} s old (refreshed after {self._cache_seconds:g} s).")
        if self._simulated:
            notes.append("Simulated account (simulate mode): not your real balance.")
        return AccountAnswer(
            packs=packs,
            remaining_units_active=sum(p.remaining_units for p in packs if p.status == "active"),
            fetched_at=iso_time(int(fetched_wall * 1000)) or "",
            units_today=today.spent,
            daily_budget_left=today.left,
            notes=notes,
        )
