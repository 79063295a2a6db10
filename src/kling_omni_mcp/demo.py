"""``kling-omni-mcp demo``: the whole product in one command, with no account.

Spawns this server in simulate mode as a child process, talks to it over stdio with a real MCP
client (exactly as Claude Desktop or Cursor would), lists the tools, creates an image from a
prompt and a reference image, waits with visible progress and prints the saved files' paths.
This is a CLI, not a server: printing to stdout is its job.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import anyio

__all__ = ["run_demo"]

_PROMPT = "A red fox reading a map, painted in the style of <<<image_1>>>"


def _say(text: str = "") -> None:
    print(text, flush=True)


def _make_reference(folder: Path) -> Path:
    """A small reference picture the demo sends as <<<image_1>>>."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "demo-reference.png"
    image = Image.new("RGB", (640, 480), (32, 64, 128))
    draw = ImageDraw.Draw(image)
    for i in range(8):
        draw.ellipse((40 + i * 60, 120, 140 + i * 60, 360), outline=(255, 200 - i * 20, 40 + i * 25), width=6)
    tmp = path.with_suffix(".tmp")
    image.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


async def _demo() -> int:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    from kling_omni_mcp.config import load_settings
    from kling_omni_mcp.runtime import result_root

    settings = load_settings(simulate=True)
    reference = _make_reference(result_root(settings))
    env = {k: v for k, v in os.environ.items() if k.startswith("KLING_")}
    env.setdefault("KLING_SIM_DURATION", "4")
    env.setdefault("KLING_LOG_LEVEL", "WARNING")  # the demo prints its own story on stdout
    env["KLING_SIMULATE"] = "true"
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "kling_omni_mcp", "--simulate"], env=env
    )

    _say("kling-omni-mcp demo: a real MCP client talking to the server over stdio, simulate mode")
    _say("(no account, no cost; results are marked as simulated)\n")
    async with Client(params, read_timeout_seconds=120) as client:
        tools = await client.list_tools()
        _say("Tools: " + ", ".join(t.name for t in tools.tools))
        _say(f"\ncreate_image: {_PROMPT!r}\n  reference image: {reference}")
        created = await client.call_tool("create_image", {"prompt": _PROMPT, "images": [str(reference)]})
        if created.is_error:
            _say("create_image failed: " + _text(created))
            return 1
        data: dict[str, Any] = created.structured_content or {}
        task_id = data["task_id"]
        _say(f"  task {task_id}: {data['status']}, estimated cost {data.get('estimated_units')} units")

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            _say(f"  progress {progress:5.1f}/{total or 0:.0f} s  {message or ''}")

        _say(f"\nwait_for_task(task_id={task_id!r})")
        for _ in range(10):  # bounded: each wait is at most 45 s
            waited = await client.call_tool(
                "wait_for_task", {"task_id": task_id, "timeout_seconds": 45}, progress_callback=on_progress
            )
            if waited.is_error:
                _say("wait_for_task failed: " + _text(waited))
                return 1
            result: dict[str, Any] = waited.structured_content or {}
            if result.get("done"):
                break
        else:
            _say("The task did not finish in time.")
            return 1
        _say(f"\nTask {task_id} {result['status']}. Saved files:")
        paths = [img["path"] for img in result.get("images", []) if img.get("path")]
        for path in paths:
            _say(f"  {path}")
        sidecar = Path(paths[0]).parent / f"{task_id}.json" if paths else None
        if sidecar and sidecar.exists():
            _say(f"  {sidecar}  (prompt, model, cost, source URLs)")
        blocks = ", ".join(sorted({b.type for b in waited.content}))
        _say(f"\nThe answer the agent received holds: {blocks}")
        return 0 if paths else 1


def _text(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content).strip()


def run_demo() -> int:
    """Run the demo; 0 when an image was generated and saved."""
    try:
        return anyio.run(_demo)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        _say(f"demo failed: {type(exc).__name__}: {exc}")
        return 1
