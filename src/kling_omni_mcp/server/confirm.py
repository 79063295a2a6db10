"""Ask the user, through MCP form elicitation, to confirm a costly create (KLING_CONFIRM_ABOVE_UNITS)."""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import Context
from mcp_types import ClientCapabilities, ElicitationCapability
from pydantic import BaseModel, Field

from kling_omni_mcp.budget import ConfirmFn

__all__ = ["SpendConfirmation", "confirm_for"]


class SpendConfirmation(BaseModel):
    """The form the user sees: one yes/no field."""

    create: bool = Field(title="Create it", description="Spend the estimated units and create the task.")


def confirm_for(ctx: Context[Any, Any]) -> ConfirmFn | None:
    """A ``confirm`` callback that elicits the user, or None when this client cannot elicit."""
    session = ctx.request_context.session
    if not session.check_client_capability(ClientCapabilities(elicitation=ElicitationCapability())):
        return None

    async def confirm(units: int, summary: str) -> bool:
        result = await ctx.elicit(
            f"Create this Kling image task? Estimated cost: {units} units.\n{summary}",
            SpendConfirmation,
        )
        return result.action == "accept" and result.data.create

    return confirm
