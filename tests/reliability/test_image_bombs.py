"""Image bombs: bounded memory per preparation, bounded concurrency, and a server that survives.

Each figure is measured, not estimated: a fresh Python process prepares one input and reports
its peak resident memory (``VmHWM``) above what it used before; the real server, spawned over
stdio, takes six concurrent ``create_image`` calls with bombs and its own ``VmHWM`` is read from
``/proc``. Linux only (``/proc``); elsewhere these tests skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from kling_omni_mcp.media.decoding import MEMORY_BUDGET_BYTES
from tests.conftest import command, write_png
from tests.reliability.image_bombs import write_bombs

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")

MB = 1024 * 1024
SERVER_PEAK_LIMIT = 1024 * MB


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_bombs(tmp_path_factory.mktemp("bombs") / "inputs")


# One preparation in a fresh process: warm up (imports, every decoder once), then measure.
_MEASURE = r"""
import base64, io, json, sys
from pathlib import Path
from PIL import Image
from kling_omni_mcp.media.errors import MediaError
from kling_omni_mcp.media.inputs import prepare_image_input
from kling_omni_mcp.media.previews import make_preview

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

for fmt in ("PNG", "JPEG", "WEBP"):
    buf = io.BytesIO()
    Image.new("RGB", (320, 320)).save(buf, fmt)
    prepare_image_input("data:;base64," + base64.b64encode(buf.getvalue()).decode(), allowed_dirs=[])
warm = Path(sys.argv[1]).with_name("warm.png")
Image.new("RGB", (320, 320)).save(warm)
make_preview(warm, max_side=512, max_bytes=40_000)
before = status("VmRSS:")
path = Path(sys.argv[2])
if sys.argv[3] == "preview":
    got = make_preview(path, max_side=512, max_bytes=40_000)
    outcome = {"ok": got is not None, "text": str(got and (got.width, got.height))}
else:
    try:
        got = prepare_image_input(str(path), allowed_dirs=[path.parent])
        outcome = {"ok": True, "text": f"{got.width}x{got.height} {got.note}"}
    except MediaError as exc:
        outcome = {"ok": False, "text": str(exc)}
outcome["extra"] = status("VmHWM:") - before
print(json.dumps(outcome))
"""


def _measure(path: Path, what: str, tmp_path: Path) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path / "x"), str(path), what],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("kind", "accepted", "fragments"),
    [
        # 38 bytes on disk, 64 MP decoded; libwebp needs ~1 GB: refused with the figures.
        (
            "webp-8000-lossless",
            False,
            ["8000x8000 px", "64 megapixels", "MB of memory", "350 MB", "scale it"],
        ),
        ("png-64mp-small", True, ["8000x8000"]),  # under 10 MB: sent as is, verified by decoding
        ("png-64mp-large", True, ["from 8000x8000 to bound memory"]),  # 38 MB: decoded, then reduced
        ("jpeg-noise-70mb", True, ["from 4800x3600 to bound memory"]),  # decoded at 1/2 scale
    ],
)
def test_one_input_costs_at_most_the_memory_budget(
    bombs: dict[str, Path], tmp_path: Path, kind: str, accepted: bool, fragments: list[str]
) -> None:
    got = _measure(bombs[kind], "input", tmp_path)
    extra = int(got["extra"])  # type: ignore[call-overload]
    print(f"{kind}: {extra / MB:.0f} MB extra; {got['text']}")
    assert extra < MEMORY_BUDGET_BYTES, f"{kind} took {extra / MB:.0f} MB"
    assert got["ok"] is accepted, got["text"]
    for fragment in fragments:
        assert fragment in str(got["text"])


@pytest.mark.parametrize("kind", ["png-64mp-small", "png-64mp-large"])
def test_a_preview_of_a_64_mp_result_costs_at_most_the_memory_budget(
    bombs: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    got = _measure(bombs[kind], "preview", tmp_path)
    extra = int(got["extra"])  # type: ignore[call-overload]
    print(f"preview of {kind}: {extra / MB:.0f} MB extra; {got['text']}")
    assert extra < MEMORY_BUDGET_BYTES, f"a preview of {kind} took {extra / MB:.0f} MB"
    assert got["ok"] is True and got["text"] == "(512, 512)"


# --- the real server over stdio --------------------------------------------------------------


def _children_status(parent: int) -> dict[int, dict[str, str]]:
    """``/proc/<pid>/status`` fields of ``parent``'s children (a /proc scan: no psutil here)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(
                line.split(":\t", 1) for line in (entry / "status").read_text().splitlines() if ":\t" in line
            )
        except OSError:  # the process ended meanwhile
            continue
        if fields.get("PPid", "").strip() == str(parent):
            found[int(entry.name)] = fields
    return found


def _server_pid() -> int:
    """The spawned server: our child whose command line is the server's."""
    for pid in _children_status(os.getpid()):
        try:
            cmdline = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--simulate" in cmdline and any(b"kling" in part for part in cmdline):
            return pid
    raise AssertionError("the spawned server process was not found among this process's children")


def _peak_rss(pid: int) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


@pytest.mark.anyio
async def test_six_concurrent_creates_with_bombs_keep_the_server_under_1_gb(
    bombs: dict[str, Path], tmp_path: Path
) -> None:
    inputs = bombs["webp-8000-lossless"].parent
    normal = write_png(inputs / "normal.png")
    env = {
        "HOME": str(tmp_path / "home"),
        "PATH": os.environ.get("PATH", ""),
        "KLING_OUTPUT_DIR": str(tmp_path / "out"),
        "KLING_INPUT_DIRS": str(inputs),
        "KLING_SIM_DURATION": "1",
    }
    cmd = command()
    params = StdioServerParameters(command=cmd[0], args=[*cmd[1:], "--simulate"], env=env)
    # The heaviest accepted input three times (alone it peaks at ~330 MB), and one of each other.
    calls = ["png-64mp-large", "webp-8000-lossless", "png-64mp-large", "png-64mp-small", "jpeg-noise-70mb"]
    calls.insert(1, "png-64mp-large")
    answers: dict[int, tuple[bool, str]] = {}
    async with Client(params, read_timeout_seconds=300) as client:
        pid = _server_pid()
        idle = _peak_rss(pid)

        async def create(i: int, kind: str) -> None:
            result = await client.call_tool(
                "create_image",
                {"prompt": f"bomb {i}: <<<image_1>>> as a watercolour", "images": [str(bombs[kind])]},
            )
            text = "\n".join(getattr(block, "text", "") for block in result.content)
            answers[i] = (result.is_error, text)

        with anyio.fail_after(600):
            async with anyio.create_task_group() as group:
                for i, kind in enumerate(calls):
                    group.start_soon(create, i, kind)
        peak = _peak_rss(pid)
        print(f"server peak RSS {peak / MB:.0f} MB (idle {idle / MB:.0f} MB) over 6 concurrent bomb creates")
        assert peak < SERVER_PEAK_LIMIT, f"peak RSS {peak / MB:.0f} MB"
        for i, kind in enumerate(calls):
            is_error, text = answers[i]
            if kind == "webp-8000-lossless":
                assert is_error and "8000x8000 px" in text and "350 MB" in text, text
            else:
                assert not is_error, text

        # The server still answers normally.
        with anyio.fail_after(120):
            after = await client.call_tool(
                "create_image",
                {"prompt": "<<<image_1>>> as a sketch", "images": [str(normal)], "wait_seconds": 30},
            )
        assert not after.is_error, after.content
        assert after.structured_content is not None and after.structured_content["status"] == "succeeded"
