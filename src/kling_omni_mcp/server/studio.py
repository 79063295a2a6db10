"""The studio view: an MCP App (``io.modelcontextprotocol/ui``) that shows a task in the chat.

``create_image`` and ``wait_for_task`` point at one ``ui://`` HTML resource (``studio.html``,
shipped in the package). Hosts that render MCP Apps show it next to the tool call; the view
polls the app-only ``task_snapshot`` tool (never a blocking call) and reads small thumbnails
through ``resources/read``. Hosts without apps ignore all of it: tool answers are unchanged.

This module also labels the saved-image resource with its real MIME type (the SDK labels a
template's bytes with one fixed type, ``text/plain`` by default), so a view can build a working
``data:`` URL from it.
"""

from __future__ import annotations

import base64
import functools
import json
import re
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from mcp.server.apps import Apps, client_supports_apps
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from kling_omni_mcp.answers import Status, TaskAnswer
from kling_omni_mcp.kling.capabilities import MODEL_CAPABILITIES
from kling_omni_mcp.kling.errors import KlingError
from kling_omni_mcp.media.sniff import sniff
from kling_omni_mcp.ownership import not_found_message
from kling_omni_mcp.service import ServiceError

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
    from mcp.server.mcpserver import MCPServer

    from kling_omni_mcp.media.previews import Preview
    from kling_omni_mcp.service import KlingService

__all__ = [
    "SNAPSHOT_TOOL",
    "STUDIO_TOOL_META",
    "STUDIO_URI",
    "THUMBNAIL_MAX_BYTES",
    "THUMBNAIL_SIDE",
    "TaskSnapshot",
    "register_studio",
    "snapshot_of",
    "studio_apps",
    "studio_html",
]

STUDIO_URI = "ui://kling-omni-mcp/studio.html"
#: ``_meta`` for the model-facing tools the view renders (``create_image``, ``wait_for_task``).
STUDIO_TOOL_META: dict[str, Any] = {"ui": {"resourceUri": STUDIO_URI}}
SNAPSHOT_TOOL = "task_snapshot"
#: Thumbnails: long side in pixels and a byte ceiling, so a grid of nine reads quickly.
THUMBNAIL_SIDE = 320
THUMBNAIL_MAX_BYTES = 95_000
THUMBNAIL_TEMPLATE = "kling://tasks/{task_id}/thumbnails/{index}"
IMAGE_TEMPLATE = "kling://tasks/{task_id}/images/{index}"
_IMAGE_URI = re.compile(r"^kling://tasks/[^/]+/images/\d+$")
_PRICES_PLACEHOLDER = "/*__KLING_PRICES__*/{}"

TaskId = Annotated[str, Field(max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")]  # the pattern needs 1+


class SnapshotImage(BaseModel):
    """One finished image as the view shows it."""

    index: int
    width: int | None = None
    height: int | None = None
    mime_type: str | None = None
    path: str | None = None
    thumbnail_uri: str | None = None  # None until the image is saved locally
    image_uri: str | None = None
    link: str | None = None  # the vendor's https link, when there is one


class TaskSnapshot(BaseModel):
    """A task right now, for the view: small, no Base64."""

    task_id: str
    status: Status
    done: bool
    elapsed_seconds: float | None = None
    model: str | None = None
    estimated_units: int | None = None
    status_message: str | None = None  # the vendor's reason, when it failed
    message: str | None = None  # the reason plus what to do, in whole sentences
    images: list[SnapshotImage] = Field(default_factory=list)


def studio_html() -> str:
    """The view's HTML, with the model price table filled in (one source for prices)."""
    text = resources.files("kling_omni_mcp.server").joinpath("studio.html").read_text(encoding="utf-8")
    prices = {name: dict(caps.units_per_image) for name, caps in MODEL_CAPABILITIES.items()}
    return text.replace(_PRICES_PLACEHOLDER, json.dumps(prices, sort_keys=True))


def _elapsed(answer: TaskAnswer) -> float | None:
    if not answer.created_at:
        return None
    try:
        started = datetime.fromisoformat(answer.created_at.replace("Z", "+00:00"))
    except ValueError:
        return None
    return round(max(0.0, (datetime.now(UTC) - started).total_seconds()), 1)


def snapshot_of(answer: TaskAnswer, *, message: str | None = None) -> TaskSnapshot:
    """The view's picture of a task answer."""
    images = []
    for img in sorted(answer.images, key=lambda i: i.index):
        saved = img.path is not None
        images.append(
            SnapshotImage(
                index=img.index,
                width=img.width,
                height=img.height,
                mime_type=img.mime_type,
                path=img.path,
                thumbnail_uri=THUMBNAIL_TEMPLATE.format(task_id=answer.task_id, index=img.index)
                if saved
                else None,
                image_uri=IMAGE_TEMPLATE.format(task_id=answer.task_id, index=img.index) if saved else None,
                link=img.url if img.url.startswith("https://") else None,
            )
        )
    return TaskSnapshot(
        task_id=answer.task_id,
        status=answer.status,
        done=answer.done,
        elapsed_seconds=_elapsed(answer),
        model=answer.model,
        estimated_units=answer.estimated_units,
        status_message=answer.status_message,
        message=message,
        images=images,
    )


def _service(ctx: Context[Any, Any]) -> KlingService:
    service: KlingService = ctx.request_context.lifespan_context.service
    return service


async def task_snapshot(task_id: TaskId, ctx: Context[Any, Any]) -> CallToolResult:
    """The state of a task now: one vendor query, never a wait (the view calls it every 1-2 s).

    Its structured content is a ``TaskSnapshot``; no output schema is declared, because every
    schema byte lands in the model's context and only the view reads this tool."""
    state = ctx.request_context.lifespan_context
    try:
        answer = await state.service.get_task(task_id, caller=state.caller())
    except KlingError as exc:
        raise ToolError(exc.describe()) from None
    except ServiceError as exc:
        raise ToolError(str(exc)) from None
    # A failed task is a state to show (with the reason and what to do), not an error of this call.
    snap = snapshot_of(answer, message=answer.failure_note() if answer.status == "failed" else None)
    if state.remote:  # a server path means nothing to a remote view and reveals the server's layout
        snap.images = [img.model_copy(update={"path": None}) for img in snap.images]
    text = f"Task {snap.task_id} {snap.status}; {len(snap.images)} image(s)."
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=snap.model_dump(mode="json", exclude_none=True),
    )


def studio_apps() -> Apps:
    """The Apps extension: the view resource and the app-only snapshot tool.

    Passed to ``MCPServer(extensions=[...])``; the model-facing tools point at the view with
    ``meta=STUDIO_TOOL_META``.
    """
    apps = Apps()
    apps.add_html_resource(
        STUDIO_URI,
        studio_html(),
        name="studio",
        title="Kling studio",
        description="Shows an image task in the chat: progress, thumbnails, next steps.",
        prefers_border=True,
    )
    apps.tool(
        resource_uri=STUDIO_URI,
        visibility=["app"],
        name=SNAPSHOT_TOOL,
        # No title, a tiny description, no output schema: every byte of tools/list is context.
        description="Studio view: a task's state now (free).",
        annotations=ToolAnnotations(read_only_hint=True),
    )(task_snapshot)
    return apps


# --- thumbnails ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=128)  # ≤ 95 KB each: at most ~12 MB
def _thumbnail_of(path: str, _mtime_ns: int, _size: int) -> Preview | None:
    from kling_omni_mcp.media.previews import make_preview

    return make_preview(Path(path), max_side=THUMBNAIL_SIDE, max_bytes=THUMBNAIL_MAX_BYTES)


def thumbnail(path: Path) -> Preview | None:
    """A JPEG thumbnail of a saved image, made once per file version (cached in memory)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _thumbnail_of(str(path), stat.st_mtime_ns, stat.st_size)


def _saved_path(service: KlingService, task_id: str, index: str) -> Path:
    if not index.isdigit():
        raise ResourceError(f"index must be a number, got {index!r}.")
    path = service.store.saved_image(task_id, int(index))
    if path is None:
        raise ResourceError(
            f'No saved image {index} for task {task_id}: call get_task(task_id="{task_id}") to save it first.'
        )
    return path


# --- MIME labels for saved images -----------------------------------------------------------------


async def label_image_mime_types(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: a ``kling://tasks/{id}/images/{n}`` read carries the bytes' real MIME type.

    The SDK gives every read of a resource template the template's one fixed type, but a saved
    result may be PNG, JPEG or WebP; the type comes from the bytes themselves.
    """
    if ctx.method != "resources/read":
        return await call_next(ctx)
    result = await call_next(ctx)
    uri = ctx.params.get("uri") if ctx.params is not None else None
    if not isinstance(uri, str) or not _IMAGE_URI.match(uri) or not isinstance(result, dict):
        return result
    # The chain hands back the wire form: {"contents": [{"uri", "mimeType", "blob"}, ...]}.
    for item in result.get("contents") or ():
        blob = item.get("blob") if isinstance(item, dict) else None
        if isinstance(blob, str):
            found = sniff(base64.b64decode(blob[:64]))
            if found.is_image and found.mime:
                item["mimeType"] = found.mime
    return result


async def hide_app_only_tools(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Middleware: a client that did not negotiate MCP Apps gets today's ``tools/list``.

    App-only tools exist for the view; a client that cannot show the view has no use for them,
    and its model would pay for reading them in every conversation.
    """
    result = await call_next(ctx)
    if ctx.method != "tools/list" or not isinstance(result, dict) or client_supports_apps(ctx):
        return result
    if ctx.session.client_capabilities is None:
        # Unknown (stateless HTTP keeps no handshake): show everything rather than hide the
        # view's tool from a host that may well render it.
        return result
    tools = result.get("tools")
    if isinstance(tools, list):
        result["tools"] = [tool for tool in tools if not is_app_only(tool)]
    return result


def is_app_only(tool: Any) -> bool:
    """True for a tool only the view may call (``_meta.ui.visibility == ["app"]``), as a wire
    dict or as the SDK's ``Tool``."""
    meta = tool.get("_meta") if isinstance(tool, dict) else getattr(tool, "meta", None)
    ui = meta.get("ui") if isinstance(meta, dict) else None
    return isinstance(ui, dict) and ui.get("visibility") == ["app"]


def register_studio(server: MCPServer[Any]) -> None:
    """Add the thumbnail resource, the image MIME labels and the app-only tools' hiding from
    clients without MCP Apps (the view and its tool are ``studio_apps``)."""

    @server.resource(
        THUMBNAIL_TEMPLATE,
        name="task-thumbnail",
        title="Task image thumbnail",
        description=f"A small JPEG (≤ {THUMBNAIL_SIDE} px) of a saved task image, for the studio view.",
        mime_type="image/jpeg",
    )
    async def task_thumbnail(task_id: str, index: str, ctx: Context[Any, Any]) -> bytes:
        if not await ctx.request_context.lifespan_context.may_see(task_id):
            raise ResourceError(not_found_message(task_id))  # someone else's task: as if unknown
        path = _saved_path(_service(ctx), task_id, index)
        made = await anyio.to_thread.run_sync(thumbnail, path)
        if made is None:
            raise ResourceError(f"Image {index} of task {task_id} could not be read to make a thumbnail.")
        return made.data

    server.middleware.extend([label_image_mime_types, hide_app_only_tools])
