"""The MCP tools: thin wrappers that validate arguments, call the service and render answers.

Descriptions are written for the model that reads them (what it does, what it costs, what to
call next) and kept tight: the whole ``tools/list`` is read into context in every conversation.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Resolve
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import Field

from kling_omni_mcp.answers import TaskAnswer, TaskListAnswer
from kling_omni_mcp.budget import SpendingRefusal
from kling_omni_mcp.config import MAX_WAIT_SECONDS
from kling_omni_mcp.kling.errors import KlingError
from kling_omni_mcp.kling.rules import MODEL_CAPABILITIES
from kling_omni_mcp.media.errors import MediaError
from kling_omni_mcp.server.confirm import SpendConfirmation, ask_to_confirm, confirm_from
from kling_omni_mcp.server.render import render_answer, render_model
from kling_omni_mcp.service import CreateImageParams, KlingService, ServiceError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from kling_omni_mcp.server.app import AppContext

__all__ = ["register_tools", "tool_errors"]

logger = logging.getLogger(__name__)

TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="task_id from create_image (or your external_task_id).",
    ),
]

ElementId = Annotated[
    int | Annotated[str, Field(pattern=r"^[1-9][0-9]{0,18}$")],
    Field(description="Element id (a digit string is fine when your client rounds big numbers)."),
]


@asynccontextmanager
async def tool_errors(tool: str) -> AsyncIterator[None]:
    """Turn every refusal into a ``ToolError`` whose message the model can act on."""
    try:
        yield
    except ToolError:
        raise
    except KlingError as exc:
        raise ToolError(exc.describe()) from None
    except (ServiceError, MediaError, SpendingRefusal) as exc:
        raise ToolError(str(exc)) from None
    except Exception as exc:
        # A bug, not a refusal: keep the traceback on stderr, give the model a way forward.
        logger.exception("%s failed unexpectedly", tool)
        raise ToolError(
            f"{tool} failed unexpectedly ({type(exc).__name__}). Nothing was lost: if a task was "
            "created, list_tasks shows it. Please report this bug."
        ) from None


def _service(ctx: Context[Any, Any]) -> KlingService:
    state: AppContext = ctx.request_context.lifespan_context
    return state.service


async def _progress(ctx: Context[Any, Any]) -> Any:
    async def report(progress: float, total: float, message: str) -> None:
        await ctx.report_progress(progress, total, message)

    return report


def _model_lines() -> str:
    """One short line per model, generated from the capability map so docs and checks agree."""
    parts = []
    for caps in MODEL_CAPABILITIES.values():
        prices = "/".join(f"{res} {units}u" for res, units in caps.units_per_image.items())
        extras = ["series" if caps.supports_series else "single only"]
        if not caps.auto_aspect_for_text_only:
            extras.append("text-only needs an aspect_ratio")
        parts.append(f"{caps.name} ({prices} per image; {', '.join(extras)})")
    return "Models: " + "; ".join(parts) + "."


CREATE_DESCRIPTION = f"""Generate images with Kling Omni-Image from a prompt and optional reference images.
Costs credits per image (u = units); requests the rules refuse cost nothing.
Returns a task_id at once; then call wait_for_task(task_id) until done (or set wait_seconds).
Refer to inputs in the prompt as <<<image_1>>>, <<<element_1>>> (1-based).
Reuse the same external_task_id when retrying: you get the same task, never a second charge.
{_model_lines()}"""

WAIT_DESCRIPTION = f"""Wait for a task to finish, with progress; saves the images, returns their paths. Free.
If the time budget runs out it returns done=false (not an error): call wait_for_task again.
timeout_seconds defaults to the server's setting (45 s), max {MAX_WAIT_SECONDS}."""


def compact_schema(node: Any, *, drop_object_descriptions: bool = False) -> Any:
    """The same JSON Schema with less to read: no auto-generated titles, ``X | None`` written as
    ``"type": [X, "null"]``, no ``"default": null`` (and, for output schemas, no class docstrings).
    Every tool schema is read into the model's context in every conversation, so these bytes are
    paid again and again."""
    if isinstance(node, list):
        return [compact_schema(item, drop_object_descriptions=drop_object_descriptions) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        if key == "description" and drop_object_descriptions and "properties" in node:
            continue
        out[key] = (
            value
            if key == "properties"
            else compact_schema(value, drop_object_descriptions=drop_object_descriptions)
        )
    if "properties" in out:
        out["properties"] = {
            name: compact_schema(sub, drop_object_descriptions=drop_object_descriptions)
            for name, sub in out["properties"].items()
        }
    options = out.get("anyOf")
    if (
        isinstance(options, list)
        and len(options) == 2
        and {"type": "null"} in options
        and all(set(o) == {"type"} and isinstance(o["type"], str) for o in options)
    ):
        del out["anyOf"]
        other = next(o["type"] for o in options if o["type"] != "null")
        out["type"] = [other, "null"]
    return out


def _compact_registered(server: MCPServer[AppContext]) -> None:
    # MCPServer derives the schemas once at registration; shrink them in place. (There is no
    # public hook for this in mcp 2.3; the tool manager is the owner of those dicts.)
    for tool in server._tool_manager.list_tools():
        tool.parameters = compact_schema(tool.parameters)
        if tool.fn_metadata.output_schema is not None:
            tool.fn_metadata.output_schema = compact_schema(
                tool.fn_metadata.output_schema, drop_object_descriptions=True
            )


#: get_task, wait_for_task and list_tasks only read from the vendor (saving results locally is a
#: cache of what the vendor holds), so repeating them is safe.
_READS_VENDOR = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


def register_tools(server: MCPServer[AppContext]) -> None:
    """Add the tools to ``server``."""

    @server.tool(
        name="create_image",
        title="Create image",
        description=CREATE_DESCRIPTION,
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
    )
    async def create_image(
        prompt: Annotated[str, Field(min_length=1, max_length=2500, description="What to generate.")],
        ctx: Context[Any, Any],
        # Asked of the user (form elicitation), never of the model: see server/confirm.py.
        confirmation: Annotated[ElicitationResult[SpendConfirmation], Resolve(ask_to_confirm)],
        images: Annotated[
            list[str],
            Field(
                max_length=10, description="Reference images: absolute file paths, http(s) URLs or Base64."
            ),
        ] = [],  # noqa: B006 - pydantic copies defaults
        element_ids: Annotated[
            list[ElementId], Field(max_length=10, description="Element library ids.")
        ] = [],  # noqa: B006
        model: Literal["kling-image-o1", "kling-v3-omni"] = "kling-image-o1",
        resolution: Literal["1k", "2k", "4k"] = "1k",
        aspect_ratio: Annotated[
            Literal["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9", "auto"] | None,
            Field(description="Default: auto (follows the inputs)."),
        ] = None,
        n: Annotated[int, Field(ge=1, le=9, description="Images to make (single).")] = 1,
        result_type: Literal["single", "series"] = "single",
        series_amount: Annotated[
            int | Literal["auto"] | None, Field(description="2-9 or auto; series only.")
        ] = None,
        watermark: bool | None = None,
        external_task_id: Annotated[
            str | None,
            Field(
                max_length=128, pattern=r"^[A-Za-z0-9._:-]+$", description="Your own id; makes retries safe."
            ),
        ] = None,
        callback_url: Annotated[
            str | None, Field(max_length=2048, description="Vendor POSTs status here.")
        ] = None,
        wait_seconds: Annotated[
            float,
            Field(
                ge=0, le=MAX_WAIT_SECONDS, description="Wait this long for the result (0: return at once)."
            ),
        ] = 0,
    ) -> Annotated[CallToolResult, TaskAnswer]:
        async with tool_errors("create_image"):
            service = _service(ctx)
            params = CreateImageParams(
                prompt=prompt,
                images=images,
                element_ids=[int(e) for e in element_ids],
                model=model,
                resolution=resolution,
                aspect_ratio=aspect_ratio,
                n=n,
                result_type=result_type,
                series_amount=series_amount,
                watermark=watermark,
                external_task_id=external_task_id,
                callback_url=callback_url,
            )
            answer = await service.create_image(
                params,
                wait_seconds=wait_seconds,
                progress=await _progress(ctx),
                confirm=confirm_from(ctx, confirmation),
            )
            return await render_answer(answer, preview_size=service.settings.preview_size)

    @server.tool(
        name="get_task",
        title="Get task",
        description="Check a task once (free). A finished task's images are saved to disk on first sight "
        "and their paths returned. To wait for a running task use wait_for_task instead.",
        annotations=_READS_VENDOR,
    )
    async def get_task(task_id: TaskId, ctx: Context[Any, Any]) -> Annotated[CallToolResult, TaskAnswer]:
        async with tool_errors("get_task"):
            service = _service(ctx)
            answer = await service.get_task(task_id)
            return await render_answer(answer, preview_size=service.settings.preview_size)

    @server.tool(
        name="wait_for_task",
        title="Wait for task",
        description=WAIT_DESCRIPTION,
        annotations=_READS_VENDOR,
    )
    async def wait_for_task(
        task_id: TaskId,
        ctx: Context[Any, Any],
        timeout_seconds: Annotated[
            float | None, Field(gt=0, le=MAX_WAIT_SECONDS, description="Seconds to wait at most.")
        ] = None,
    ) -> Annotated[CallToolResult, TaskAnswer]:
        async with tool_errors("wait_for_task"):
            service = _service(ctx)
            budget = timeout_seconds if timeout_seconds is not None else service.settings.wait_seconds
            answer = await service.wait_for_task(task_id, budget, await _progress(ctx))
            return await render_answer(answer, preview_size=service.settings.preview_size)

    @server.tool(
        name="list_tasks",
        title="List tasks",
        description="List recent image tasks, newest first (free): status, image count, saved file paths.",
        annotations=_READS_VENDOR,
    )
    async def list_tasks(
        ctx: Context[Any, Any],
        page: Annotated[int, Field(ge=1, le=1000)] = 1,
        page_size: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> Annotated[CallToolResult, TaskListAnswer]:
        async with tool_errors("list_tasks"):
            answer = await _service(ctx).list_tasks(page=page, page_size=page_size)
            return render_model(answer, answer.summary())

    from kling_omni_mcp.server.account_tool import register_account_tool  # it imports this module

    register_account_tool(server)
    _compact_registered(server)
