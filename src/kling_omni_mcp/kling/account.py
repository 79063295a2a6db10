"""Wire models of ``GET /account/costs``: the account's resource packs, spelled as the vendor does.

The vendor's figures can be up to 12 hours late (``remaining_quantity`` in particular); the
answer built from them in ``kling_omni_mcp.account`` says so.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ACCOUNT_COSTS_PATH", "AccountCosts", "PackStatus", "PackType", "ResourcePack"]

ACCOUNT_COSTS_PATH = "/account/costs"

PackType = Literal["decreasing_total", "constant_period"]
PackStatus = Literal["toBeOnline", "online", "expired", "runOut"]


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ResourcePack(_Wire):
    """One entry of ``resource_pack_subscribe_infos``; times are ms since the epoch."""

    resource_pack_name: str = ""
    resource_pack_id: str = ""
    # Plain strings rather than the Literals above: a new vendor word must not break the answer.
    resource_pack_type: str = ""
    total_quantity: float = 0
    remaining_quantity: float = 0
    purchase_time: int | None = None
    effective_time: int | None = None
    invalid_time: int | None = None
    status: str = ""


class AccountCosts(_Wire):
    """``data`` of ``GET /account/costs``."""

    resource_pack_subscribe_infos: list[ResourcePack] = Field(default_factory=list)
