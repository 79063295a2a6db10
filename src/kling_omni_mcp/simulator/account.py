"""The simulated ``GET /account/costs``: resource packs whose remaining units fall as tasks finish.

The image pack is charged lazily: each answer first books every task that has ``succeed`` since
the last one (failed tasks cost nothing, as at the vendor). Like the vendor, the endpoint allows
at most one query per second per account and answers a faster one with 429 / 1302.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from .contract import units_per_image
from .envelope import ApiError, envelope_response
from .state import now_ms

if TYPE_CHECKING:
    from .sim import Simulator

__all__ = ["ACCOUNT_COSTS_PATH", "SimAccount", "SimPack", "account_costs"]

ACCOUNT_COSTS_PATH = "/account/costs"
#: The vendor's limit on this endpoint.
MIN_QUERY_INTERVAL = 1.0
_DAY = 86_400_000  # ms


@dataclass
class SimPack:
    """One resource pack; ``kind`` says which tasks it pays for ("image" or "video")."""

    name: str
    pack_id: str
    kind: str
    total: int
    remaining: int
    purchase_ms: int
    invalid_ms: int
    pack_type: str = "decreasing_total"

    def to_data(self, now: int) -> dict[str, Any]:
        """The pack as the vendor spells it, with its status at ``now`` (ms)."""
        if now >= self.invalid_ms:
            status = "expired"
        elif self.remaining <= 0:
            status = "runOut"
        elif now < self.purchase_ms:
            status = "toBeOnline"
        else:
            status = "online"
        return {
            "resource_pack_name": self.name,
            "resource_pack_id": self.pack_id,
            "resource_pack_type": self.pack_type,
            "total_quantity": self.total,
            "remaining_quantity": max(self.remaining, 0),
            "purchase_time": self.purchase_ms,
            "effective_time": self.purchase_ms,
            "invalid_time": self.invalid_ms,
            "status": status,
        }


def _default_packs() -> list[SimPack]:
    start = now_ms() - 10 * _DAY
    return [
        SimPack("Image pack (simulated)", "sim-pack-img-1", "image", 1000, 1000, start, start + 365 * _DAY),
        SimPack("Video pack (simulated)", "sim-pack-vid-1", "video", 100, 100, start, start + 30 * _DAY),
    ]


@dataclass
class SimAccount:
    """The simulated account's packs, the tasks already charged, and how often it was asked."""

    packs: list[SimPack] = field(default_factory=_default_packs)
    queries: int = 0
    refused_too_fast: int = 0
    charged: set[str] = field(default_factory=set)
    last_query: float | None = None
    #: ``(start_time, end_time)`` of the last accepted query, in ms.
    last_window: tuple[int, int] | None = None

    def charge_finished(self, sim: Simulator) -> None:
        """Book every task that has succeeded since the last call against the image pack."""
        now = sim.clock()
        image_packs = [p for p in self.packs if p.kind == "image"]
        for task in list(sim.store.tasks.values()):
            if task.task_id in self.charged or task.status_at(now) != "succeed":
                continue
            self.charged.add(task.task_id)
            units = units_per_image(task.spec.model_name, task.spec.resolution) * task.spec.image_count
            for pack in image_packs:
                if units <= 0:
                    break
                taken = min(units, max(pack.remaining, 0))
                pack.remaining -= taken
                units -= taken

    def reset(self) -> None:
        """Full packs, nothing charged, no queries seen."""
        fresh = SimAccount()
        self.packs, self.queries, self.refused_too_fast = fresh.packs, 0, 0
        self.charged, self.last_query, self.last_window = set(), None, None


def _ms_param(request: Request, name: str) -> int:
    raw = request.query_params.get(name)
    if raw is None or not raw.isdigit() or len(raw) > 15:
        raise ApiError(400, 1201, f"{name} is required: a time in milliseconds since the epoch, got {raw!r}")
    return int(raw)


async def account_costs(sim: Simulator, request: Request) -> Response:
    """``GET /account/costs?start_time=<ms>&end_time=<ms>``."""
    account = sim.account
    account.queries += 1
    start, end = _ms_param(request, "start_time"), _ms_param(request, "end_time")
    if start > end:
        raise ApiError(400, 1201, "start_time must not be after end_time")
    now = sim.clock()
    if account.last_query is not None and now - account.last_query < MIN_QUERY_INTERVAL:
        account.refused_too_fast += 1
        raise ApiError(429, 1302, "Too many requests: /account/costs allows 1 query per second")
    account.last_query, account.last_window = now, (start, end)
    account.charge_finished(sim)
    wall = now_ms()
    packs = [p.to_data(wall) for p in account.packs if p.purchase_ms <= end and p.invalid_ms >= start]
    return envelope_response({"code": 0, "msg": "success", "resource_pack_subscribe_infos": packs})
