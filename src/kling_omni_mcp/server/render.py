"""Render a service answer as an MCP tool result: text, resource links, small previews.

One answer never exceeds ``ANSWER_CHAR_LIMIT`` (100,000 characters, all blocks together): hosts
swap larger results for a file pointer (Claude's apps at ~150,000) and every inline byte costs the
model context. The previews share a fixed character budget within it: they shrink, then drop,
as images are added, and the text says so.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel

from kling_omni_mcp.answers import TaskAnswer

if TYPE_CHECKING:
    from kling_omni_mcp.media.previews import Preview

__all__ = ["ANSWER_CHAR_LIMIT", "PREVIEW_CHAR_BUDGET", "render_answer", "render_model"]

logger = logging.getLogger(__name__)

#: Hard ceiling for one tool answer, all blocks together.
ANSWER_CHAR_LIMIT = 100_000
#: What inline previews may use of it (Base64 characters, all previews together).
PREVIEW_CHAR_BUDGET = 60_000


def _preview(path: Path, side: int, max_bytes: int) -> Preview | None:
    """A preview of a saved file, made once: agents call get_task on the same task again and
    again, and re-encoding a 1024 px PNG each time costs ~25 ms per image (measured)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _preview_of(str(path), stat.st_mtime_ns, stat.st_size, side, max_bytes)


@functools.lru_cache(maxsize=64)  # previews are at most ~45 KB: a few MB at most
def _preview_of(path: str, _mtime_ns: int, _size: int, side: int, max_bytes: int) -> Preview | None:
    from kling_omni_mcp.media.previews import make_preview

    return make_preview(Path(path), max_side=side, max_bytes=max_bytes)


def render_model(model: BaseModel, text: str) -> CallToolResult:
    """A plain structured answer with its text summary."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=model.model_dump(mode="json"),
    )


async def render_answer(answer: TaskAnswer, *, preview_size: int) -> CallToolResult:
    """Text summary, one ``resource_link`` per saved image, and previews within the budget.

    A failed task is a result, not a crash: ``isError`` is set so the host shows it as a
    failure, and ``structuredContent`` still carries the task (status, reason, what to do next).
    """
    import base64

    saved = sorted((img for img in answer.images if img.path), key=lambda img: img.index)
    blocks: list[ContentBlock] = []
    previews: list[ContentBlock] = []
    preview_note: str | None = None
    if saved and preview_size > 0:
        from kling_omni_mcp.media.previews import preview_budget

        side, per_image = preview_budget(
            len(saved), max_side_cap=preview_size, total_chars=PREVIEW_CHAR_BUDGET
        )
        made = 0
        for img in saved:
            assert img.path is not None
            preview = None
            if side > 0:
                preview = await anyio.to_thread.run_sync(
                    functools.partial(_preview, Path(img.path), side, per_image)
                )
            if preview is None:
                continue
            made += 1
            previews.append(
                ImageContent(
                    type="image",
                    data=base64.b64encode(preview.data).decode("ascii"),
                    mime_type=preview.mime_type,
                )
            )
        if made < len(saved):
            preview_note = (
                f"Inline previews: {made} of {len(saved)} shown (kept small to save context); "
                "the full-size files are on disk."
            )
        elif made and side < preview_size:
            preview_note = (
                f"Inline previews are scaled to {side} px to fit {len(saved)} images; full files on disk."
            )
    if preview_note:
        answer = answer.model_copy(update={"notes": [*answer.notes, preview_note]})
    blocks.append(TextContent(type="text", text=answer.summary()))
    for img in saved:
        assert img.path is not None
        blocks.append(
            ResourceLink(
                type="resource_link",
                name=Path(img.path).name,
                title=f"Task {answer.task_id} image {img.index}",
                uri=Path(img.path).as_uri(),
                mime_type=img.mime_type or "image/png",
                description=f"kling://tasks/{answer.task_id}/images/{img.index}",
            )
        )
    blocks.extend(previews)
    failed = answer.status == "failed"
    result = CallToolResult(
        content=blocks, structured_content=answer.model_dump(mode="json"), is_error=failed
    )
    size = len(result.model_dump_json(by_alias=True))
    if size > ANSWER_CHAR_LIMIT:
        # Should not happen with the budget above; never send an oversized answer anyway.
        logger.warning("Answer for task %s was %d characters: dropping previews", answer.task_id, size)
        result = CallToolResult(
            content=[b for b in blocks if not isinstance(b, ImageContent)],
            structured_content=answer.model_dump(mode="json"),
            is_error=failed,
        )
    return result
