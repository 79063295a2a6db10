"""Context cost: characters the model pays to read our tool list and our finished-task answers.

``tools/list`` is read into the model's context in every conversation; a finished task's answer
(text summary, structured copy, resource links and inline previews) each time a task ends. The
baselines are the limits the design keeps under: 10,000 characters for ``tools/list`` and
100,000 per answer (Claude's apps replace larger tool results with a file pointer).

The simulator's results are flat shapes whose JPEG previews are tiny; a photo is far noisier.
So each answer is rendered again with photo-like (noisy) 1024 px files in place of the saved
images: that is the figure shown, the flat one is given for comparison.
"""

from __future__ import annotations

from pathlib import Path

from mcp import Client
from mcp_types import CallToolResult
from pydantic import BaseModel

from benchmarks._common import Mode, Row, fmt
from benchmarks._sim import make_settings, simulated_vendor
from kling_omni_mcp.answers import TaskAnswer
from kling_omni_mcp.server.app import build_server
from kling_omni_mcp.server.render import render_answer

__all__ = ["ANSWER_LIMIT", "TOOLS_LIMIT", "run"]

TOOLS_LIMIT = 10_000
ANSWER_LIMIT = 100_000
PREVIEW_SIZE = 512  # the default KLING_PREVIEW_SIZE


def wire_chars(result: BaseModel) -> int:
    """Characters of the JSON the client receives for this result (camelCase, no nulls)."""
    return len(result.model_dump_json(by_alias=True, exclude_none=True))


def preview_chars(result: CallToolResult) -> int:
    """Characters of the inline previews (Base64) in a result."""
    return sum(len(block.data) for block in result.content if block.type == "image")


def _photo_like(folder: Path, count: int, side: int = 1024) -> list[Path]:
    """``count`` noisy ``side`` x ``side`` PNGs: they compress like photos, not like flat shapes."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo_{i}.png"
        if not path.exists():
            channels = [Image.effect_noise((side, side), 60 + 10 * c + i) for c in range(3)]
            Image.merge("RGB", channels).save(path, format="PNG", compress_level=1)
        paths.append(path)
    return paths


async def run(mode: Mode) -> list[Row]:
    """``tools/list`` and finished answers with 1, 4 and 9 images (smoke: from 512 px photos)."""
    rows: list[Row] = []
    async with (
        simulated_vendor(duration=0.2) as env,
        Client(build_server(make_settings(env, preview_size=PREVIEW_SIZE))) as client,
    ):
        listing = await client.list_tools()
        tools = wire_chars(listing)
        rows.append(
            Row(
                f"`tools/list` ({len(listing.tools)} tools with input and output schemas)",
                fmt(tools, "chars"),
                fmt(TOOLS_LIMIT, "chars"),
                f"{100 * tools / TOOLS_LIMIT:.0f}% of the limit",
                f"≤ {TOOLS_LIMIT:,}",
                tools <= TOOLS_LIMIT,
                "limit",
            )
        )
        for n in (1, 4, 9):
            created = await client.call_tool("create_image", {"prompt": "Context cost", "n": n})
            task_id = (created.structured_content or {})["task_id"]
            waited = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 60})
            if waited.is_error or not waited.structured_content:
                raise RuntimeError(f"wait_for_task failed: {waited.content}")
            flat = wire_chars(waited)
            answer = TaskAnswer.model_validate(waited.structured_content)
            photos = _photo_like(env.folder / "photos", n, 512 if mode == "smoke" else 1024)
            for image, photo in zip(answer.images, photos, strict=True):
                image.path = str(photo)
            photo_result = await render_answer(answer, preview_size=PREVIEW_SIZE)
            chars = wire_chars(photo_result)
            rows.append(
                Row(
                    f"finished-task answer, {n} image{'s' if n > 1 else ''} "
                    "(noisy photo-like previews: worst case)",
                    fmt(chars, "chars"),
                    fmt(ANSWER_LIMIT, "chars"),
                    f"{100 * chars / ANSWER_LIMIT:.0f}% of the limit; previews "
                    f"{preview_chars(photo_result):,}; flat simulator images {flat:,}",
                    f"< {ANSWER_LIMIT:,}",
                    chars < ANSWER_LIMIT,
                    "limit",
                )
            )
    return rows
