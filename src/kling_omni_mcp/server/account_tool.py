"""The ``get_account`` tool: resource packs and remaining units (free, read-only, cached 60 s)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ToolAnnotations

from kling_omni_mcp.account import AccountAnswer
from kling_omni_mcp.server.render import render_model
from kling_omni_mcp.server.tools import tool_errors

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from kling_omni_mcp.server.app import AppContext

__all__ = ["ACCOUNT_DESCRIPTION", "register_account_tool"]

ACCOUNT_DESCRIPTION = (
    "Remaining units per resource pack, and today's spending here (free; vendor figures lag up to 12 h)."
)


def register_account_tool(server: MCPServer[AppContext]) -> None:
    """Add ``get_account`` to ``server``."""

    @server.tool(
        name="get_account",
        title="Get account",
        description=ACCOUNT_DESCRIPTION,
        annotations=ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
    )
    async def get_account(ctx: Context[Any, Any]) -> Annotated[CallToolResult, AccountAnswer]:
        async with tool_errors("get_account"):
            answer = await ctx.request_context.lifespan_context.service.account.get()
            return render_model(answer, answer.summary())
