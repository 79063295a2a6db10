"""Build the ``MCPServer``: tools, resources and the lifespan that opens the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from kling_omni_mcp import __version__
from kling_omni_mcp.config import Settings
from kling_omni_mcp.ownership import not_found_message
from kling_omni_mcp.runtime import open_service
from kling_omni_mcp.server.identity import current_identity
from kling_omni_mcp.server.studio import register_studio, studio_apps
from kling_omni_mcp.server.tools import register_tools
from kling_omni_mcp.service import Caller, KlingService

if TYPE_CHECKING:
    from kling_omni_mcp.server.links import LinkSigner

__all__ = ["AppContext", "ServiceSlot", "build_server"]

INSTRUCTIONS = """Generates images with Kling Omni-Image. Typical flow: create_image → wait_for_task
(repeat while done=false) → use the saved images (file paths locally, links over HTTP). An earlier
result is passed back as kling://tasks/<task_id>/images/<index>."""


@dataclass
class AppContext:
    """What every tool reaches through ``ctx.request_context.lifespan_context``.

    ``remote``: served over HTTP, so answers carry links, never server paths. ``links``: the
    signer of download links (HTTP with ``KLING_PUBLIC_URL`` only); without it, remote clients
    read saved images as ``kling://`` resources.
    """

    service: KlingService
    remote: bool = False
    links: LinkSigner | None = None

    def caller(self) -> Caller:
        """The caller of the request being handled, as a plain value for the service."""
        return Caller(identity=current_identity(), remote=self.remote)

    async def may_see(self, task_id: str) -> bool:
        """True when this request's caller may see ``task_id`` (for resources and app-only tools:
        otherwise answer ``not_found_message(task_id)``, the words used for an unknown id)."""
        caller = self.caller()
        return not self.service.owners.isolates(caller) or await self.service.visible_to(task_id, caller)


@dataclass
class ServiceSlot:
    """Where the running service can be found from outside MCP (the HTTP callback route)."""

    current: KlingService | None = None


def build_server(
    settings: Settings,
    *,
    slot: ServiceSlot | None = None,
    remote: bool = False,
    links: LinkSigner | None = None,
) -> MCPServer[AppContext]:
    """The MCP server for these settings. Nothing is opened until the lifespan runs.

    ``remote`` and ``links`` are for the HTTP transport (server/http.py): see ``AppContext``.
    """

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppContext]) -> AsyncIterator[AppContext]:
        async with open_service(settings) as service:
            if slot is not None:
                slot.current = service
            try:
                yield AppContext(service=service, remote=remote, links=links)
            finally:
                if slot is not None:
                    slot.current = None

    server: MCPServer[AppContext] = MCPServer(
        "kling-omni-mcp",
        title="Kling Omni-Image",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://github.com/kling-omni-mcp/kling-omni-mcp",
        lifespan=lifespan,
        log_level=settings.log_level,
        extensions=[studio_apps()],
    )
    register_tools(server, settings)
    register_studio(server)

    @server.resource(
        "kling://tasks/{task_id}/images/{index}",
        name="task-image",
        title="Saved task image",
        description="A generated image saved on this machine (PNG/JPEG bytes).",
    )
    async def task_image(task_id: str, index: str, ctx: Context[AppContext, Any]) -> bytes:
        state = ctx.request_context.lifespan_context
        service = state.service
        if not index.isdigit() or len(index) > 4:
            raise ResourceError(f"index must be a number from 0 to 9999, got {index!r}.")
        if not await state.may_see(task_id):
            raise ResourceError(not_found_message(task_id))
        path = service.store.saved_image(task_id, int(index))
        if path is not None:
            return path.read_bytes()
        raise ResourceError(
            f'No saved image {index} for task {task_id}: call get_task(task_id="{task_id}") to save it first.'
        )

    return server
