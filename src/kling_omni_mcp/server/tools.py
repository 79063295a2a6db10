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
from kling_omni_mcp.config import MAX_WAIT_SECONDS, Settings
from kling_omni_mcp.kling.capabilities import (
    DEFAULT_MODEL,
    MAX_REFERENCES,
    N_RANGE,
    PROMPT_MAX_CHARS,
    RESOLUTIONS,
    SERIES_AMOUNT_RANGE,
    AspectRatio,
    ModelName,
    Resolution,
    ResultType,
    describe_models,
)
from kling_omni_mcp.kling.errors import KlingError
from kling_omni_mcp.media.errors import MediaError
from kling_omni_mcp.server.confirm import SpendConfirmation, ask_to_confirm, confirm_from
from kling_omni_mcp.server.render import render_answer, render_task_list
from kling_omni_mcp.server.schema import compact_registered_schemas
from kling_omni_mcp.server.studio import STUDIO_TOOL_META
from kling_omni_mcp.service import CreateImageParams, KlingService, ServiceError

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from kling_omni_mcp.server.app import AppContext

__all__ = ["create_description", "register_tools", "tool_errors", "wait_description"]

logger = logging.getLogger(__name__)

TaskId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="From create_image, or your external_task_id.",
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
    return _state(ctx).service


def _state(ctx: Context[Any, Any]) -> AppContext:
    state: AppContext = ctx.request_context.lifespan_context
    return state


async def _render(ctx: Context[Any, Any], answer: TaskAnswer) -> CallToolResult:
    """The answer as this transport's client reaches files (paths on stdio, links over HTTP)."""
    state = _state(ctx)
    return await render_answer(
        answer, preview_size=state.service.settings.preview_size, remote=state.remote, links=state.links
    )


async def _progress(ctx: Context[Any, Any]) -> Any:
    async def report(progress: float, total: float, message: str) -> None:
        await ctx.report_progress(progress, total, message)

    return report


def create_description() -> str:
    """What ``create_image`` does and costs; the model lines come from the capability map."""
    return f"""Generate images with Kling Omni-Image from a prompt and optional reference images.
Costs credits per image (u = units); requests the rules refuse cost nothing.
Returns a task_id at once; then call wait_for_task(task_id) until done (or set wait_seconds).
Refer to inputs in the prompt as <<<image_1>>>, <<<element_1>>> (1-based).
Reuse the same external_task_id when retrying: you get the same task, never a second charge.
{describe_models()}"""


def wait_description(settings: Settings) -> str:
    """What ``wait_for_task`` does, with this server's default budget."""
    return f"""Wait for a task to finish, with progress; saves and returns the images. Free.
If time runs out it returns done=false (not an error): call it again.
timeout_seconds defaults to the server's setting ({settings.wait_seconds:g} s), max {MAX_WAIT_SECONDS}."""


#: get_task, wait_for_task and list_tasks only read from the vendor (saving results locally is a
#: cache of what the vendor holds), so repeating them is safe.
_READS_VENDOR = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
)


def register_tools(server: MCPServer[AppContext], settings: Settings) -> None:
    """Add the tools to ``server``; descriptions state the running ``settings``."""

    @server.tool(
        name="create_image",
        title="Create image",
        description=create_description(),
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=True,
        ),
        meta=STUDIO_TOOL_META,
    )
    async def create_image(
        prompt: Annotated[
            str, Field(min_length=1, max_length=PROMPT_MAX_CHARS, description="What to generate.")
        ],
        ctx: Context[Any, Any],
        # Asked of the user (form elicitation), never of the model: see server/confirm.py.
        confirmation: Annotated[ElicitationResult[SpendConfirmation], Resolve(ask_to_confirm)],
        images: Annotated[
            list[str],
            Field(
                max_length=MAX_REFERENCES,
                description="Reference images: http(s) URLs, Base64, kling:// URIs, file paths.",
            ),
        ] = [],  # noqa: B006 - pydantic copies defaults
        element_ids: Annotated[
            list[ElementId], Field(max_length=MAX_REFERENCES, description="Element library ids.")
        ] = [],  # noqa: B006
        model: ModelName = DEFAULT_MODEL,
        resolution: Resolution = RESOLUTIONS[0],
        aspect_ratio: Annotated[
            AspectRatio | None,
            Field(description="Default: auto (follows the inputs)."),
        ] = None,
        n: Annotated[int, Field(ge=N_RANGE[0], le=N_RANGE[1], description="Images to make (single).")] = 1,
        result_type: ResultType = "single",
        series_amount: Annotated[
            int | Literal["auto"] | None,
            Field(description=f"{SERIES_AMOUNT_RANGE[0]}-{SERIES_AMOUNT_RANGE[1]} or auto; series only."),
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
                caller=_state(ctx).caller(),
            )
            return await _render(ctx, answer)

    @server.tool(
        name="get_task",
        title="Get task",
        description="Check a task once (free); a finished task's images are saved and returned. "
        "To wait, use wait_for_task.",
        annotations=_READS_VENDOR,
    )
    async def get_task(task_id: TaskId, ctx: Context[Any, Any]) -> Annotated[CallToolResult, TaskAnswer]:
        async with tool_errors("get_task"):
            service = _service(ctx)
            answer = await service.get_task(task_id, caller=_state(ctx).caller())
            return await _render(ctx, answer)

    @server.tool(
        name="wait_for_task",
        title="Wait for task",
        description=wait_description(settings),
        annotations=_READS_VENDOR,
        meta=STUDIO_TOOL_META,
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
            answer = await service.wait_for_task(
                task_id, budget, await _progress(ctx), caller=_state(ctx).caller()
            )
            return await _render(ctx, answer)

    @server.tool(
        name="list_tasks",
        title="List tasks",
        description="List recent image tasks, newest first (free).",
        annotations=_READS_VENDOR,
    )
    async def list_tasks(
        ctx: Context[Any, Any],
        page: Annotated[int, Field(ge=1, le=1000)] = 1,
        page_size: Annotated[int, Field(ge=1, le=100)] = 20,
    ) -> Annotated[CallToolResult, TaskListAnswer]:
        async with tool_errors("list_tasks"):
            state = _state(ctx)
            answer = await state.service.list_tasks(page=page, page_size=page_size, caller=state.caller())
            return render_task_list(answer, remote=state.remote, links=state.links)

    from kling_omni_mcp.server.account_tool import register_account_tool  # it imports this module

    register_account_tool(server)
    compact_registered_schemas(server)
