"""Ask the user, through MCP form elicitation, to confirm a costly create (KLING_CONFIRM_ABOVE_UNITS).

The question is asked by a ``Resolve`` resolver of ``create_image`` rather than from inside the
service, because on protocol 2026-07-28 a server cannot send a request in the middle of a tool
call: the SDK returns the question as an ``InputRequiredResult`` and runs the tool body once the
client answers (on the 2025 protocols it sends ``elicitation/create`` mid-call). The resolver
computes the same estimate the service will, from the tool's own arguments; the service then
receives a ``confirm`` callback that reports the user's answer at the point of the create.
"""

from __future__ import annotations

from typing import Any

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit
from mcp_types import ClientCapabilities, ElicitationCapability
from pydantic import BaseModel, Field

from kling_omni_mcp.budget import ConfirmFn, describe_request
from kling_omni_mcp.kling.errors import KlingError
from kling_omni_mcp.kling.models import CreateImageRequest, ElementRef, ImageRef
from kling_omni_mcp.kling.rules import estimate_units

__all__ = ["SpendConfirmation", "ask_to_confirm", "confirm_from"]


class SpendConfirmation(BaseModel):
    """The form the user sees: one yes/no field."""

    create: bool = Field(title="Create it", description="Spend the estimated units and create the task.")


def _can_elicit(ctx: Context[Any, Any]) -> bool:
    wanted = ClientCapabilities(elicitation=ElicitationCapability())
    return ctx.request_context.session.check_client_capability(wanted)


async def ask_to_confirm(
    ctx: Context[Any, Any],
    prompt: str,
    images: list[str],
    element_ids: list[Any],
    model: str,
    resolution: str,
    aspect_ratio: str | None,
    n: int,
    result_type: str,
    series_amount: int | str | None,
) -> Elicit[SpendConfirmation] | None:
    """The confirmation question when this create needs one and the client can show it; else None.

    None also when the request is refused anyway (invalid, or over the daily budget): the service
    then says why, and the user is not asked to approve something that cannot happen.
    """
    spending = ctx.request_context.lifespan_context.service.spending
    threshold = spending.confirm_above_units
    if threshold is None or not _can_elicit(ctx):
        return None
    try:
        request = CreateImageRequest.model_validate(
            {
                "model_name": model,
                "prompt": prompt,
                "image_list": [ImageRef(image="-") for _ in images] or None,
                "element_list": [ElementRef(element_id=0) for _ in element_ids] or None,
                "resolution": resolution,
                "result_type": result_type,
                "n": n,
                "series_amount": series_amount if result_type == "series" else None,
                "aspect_ratio": aspect_ratio or "auto",
            }
        )
        units = estimate_units(request)
    except (KlingError, ValueError):
        return None
    if units <= threshold:
        return None
    today = await spending.today()
    if today.ceiling is not None and today.spent + units > today.ceiling:
        return None
    return Elicit(
        f"Create this Kling image task? Estimated cost: {units} units "
        f"(this server asks above {threshold} units).\n{describe_request(request)}",
        SpendConfirmation,
    )


def confirm_from(ctx: Context[Any, Any], outcome: ElicitationResult[SpendConfirmation]) -> ConfirmFn | None:
    """The service's ``confirm`` callback: the user's answer to ``ask_to_confirm``.

    None when the client cannot elicit (the service then explains KLING_CONFIRM_ABOVE_UNITS).
    """
    if not _can_elicit(ctx):
        return None

    async def confirm(units: int, summary: str) -> bool:
        # Not asked (data None) means the resolver saw no need; the service only calls this
        # when it sees one, so the two estimates disagreed: refuse rather than spend unasked.
        return (
            isinstance(outcome, AcceptedElicitation)
            and isinstance(outcome.data, SpendConfirmation)
            and outcome.data.create
        )

    return confirm
