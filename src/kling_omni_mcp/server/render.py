"""Render a service answer as an MCP tool result: text, resource links, small previews.

One answer never exceeds ``ANSWER_CHAR_LIMIT`` (100,000 characters, all blocks together): hosts
swap larger results for a file pointer (Claude's apps at ~150,000) and every inline byte costs the
model context. The previews share a fixed character budget within it: they shrink, then drop,
as images are added, and the text says so.

How a client reaches a saved file is decided here, per transport: over stdio the answer names the
file (``path``, a ``file://`` resource link); over HTTP it never names a server path (they mean
nothing to a remote client and reveal the server's layout) and gives a signed download link
(``KLING_PUBLIC_URL`` set) or the ``kling://`` resource URI instead, in ``link`` and the resource link.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent
from pydantic import BaseModel

from kling_omni_mcp.answers import ImageInfo, TaskAnswer, TaskListAnswer
from kling_omni_mcp.input_refs import KLING_IMAGE_URI, parse_image_uri

if TYPE_CHECKING:
    from kling_omni_mcp.media.previews import Preview
    from kling_omni_mcp.server.links import LinkSigner

__all__ = [
    "ANSWER_CHAR_LIMIT",
    "NO_PUBLIC_URL_NOTE",
    "PREVIEW_CHAR_BUDGET",
    "render_answer",
    "render_model",
    "render_task_list",
]

#: Over HTTP without KLING_PUBLIC_URL there is no address a link could use.
NO_PUBLIC_URL_NOTE = (
    "Read the images as MCP resources (the kling:// URIs above); this server has no public URL "
    "(KLING_PUBLIC_URL) for download links."
)

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


#: Where the full-size images are, by transport (remote: True over HTTP).
_FULL_SIZE = {True: "the full-size images are at their links.", False: "the full-size files are on disk."}


def _remote_link(links: LinkSigner | None, task_id: str, index: int) -> str:
    """Where a remote client gets a saved image: a signed link, or the kling:// resource."""
    if links is not None:
        return links.url(task_id, index)
    return KLING_IMAGE_URI.format(task_id=task_id, index=index)


def _for_remote(answer: TaskAnswer, links: LinkSigner | None) -> TaskAnswer:
    """The answer with each saved image's path replaced by its link."""
    images: list[ImageInfo] = []
    for img in answer.images:
        link = _remote_link(links, answer.task_id, img.index) if img.path else None
        images.append(img.model_copy(update={"path": None, "link": link}))
    notes = list(answer.notes)
    if links is None and any(img.link for img in images):
        notes.append(NO_PUBLIC_URL_NOTE)
    return answer.model_copy(update={"images": images, "notes": notes})


def render_task_list(
    answer: TaskListAnswer, *, remote: bool = False, links: LinkSigner | None = None
) -> CallToolResult:
    """``list_tasks``: file paths on stdio; over HTTP, no paths, and signed links when there is a
    public URL (the service gives ``kling://`` URIs; ``parse_image_uri`` reads their index back)."""
    if remote:
        rows = []
        for row in answer.tasks:
            found = [parse_image_uri(uri) for uri in row.links]
            uris = [_remote_link(links, ref[0], ref[1]) for ref in found if ref is not None]
            rows.append(row.model_copy(update={"paths": [], "links": uris}))
        answer = answer.model_copy(update={"tasks": rows})
    return render_model(answer, answer.summary())


def render_model(model: BaseModel, text: str) -> CallToolResult:
    """A plain structured answer with its text summary."""
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=model.model_dump(mode="json"),
    )


async def render_answer(
    answer: TaskAnswer, *, preview_size: int, remote: bool = False, links: LinkSigner | None = None
) -> CallToolResult:
    """Text summary, one ``resource_link`` per saved image, and previews within the budget.

    ``remote`` (HTTP): links instead of paths, see the module docstring; ``links`` signs them.

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
                + _FULL_SIZE[remote]
            )
        elif made and side < preview_size:
            preview_note = f"Inline previews are scaled to {side} px to fit {len(saved)} images; " + (
                "full-size images at their links." if remote else "full files on disk."
            )
    if preview_note:
        answer = answer.model_copy(update={"notes": [*answer.notes, preview_note]})
    if remote:
        answer = _for_remote(answer, links)
    blocks.append(TextContent(type="text", text=answer.summary()))
    shown = {img.index: img for img in answer.images}
    for img in saved:
        assert img.path is not None
        resource = KLING_IMAGE_URI.format(task_id=answer.task_id, index=img.index)
        blocks.append(
            ResourceLink(
                type="resource_link",
                name=Path(img.path).name,
                title=f"Task {answer.task_id} image {img.index}",
                uri=(shown[img.index].link or resource) if remote else Path(img.path).as_uri(),
                mime_type=img.mime_type or "image/png",
                description=resource,
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
