"""Hostile input through the real MCP tools: property-based arguments for every tool, and a table
of hostile files and paths (the ones the unit tests do not already cover through MCP).

One simulator, server and client serve the whole module: they run in a blocking portal (an event
loop in a thread), so hypothesis drives plain sync tests that call into it. Every answer must be a
valid result or a tool error with a message the model can read; never a protocol error, never the
"failed unexpectedly" answer that marks a bug; and nothing refused may reach the vendor.
"""

from __future__ import annotations

import base64
import contextlib
import os
import resource
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult
from pydantic import SecretStr

from kling_omni_mcp.config import Settings
from kling_omni_mcp.media.sniff import sniff
from kling_omni_mcp.server.app import build_server
from kling_omni_mcp.simulator import Simulator
from tests.conftest import TEST_API_KEY, serve_sim, text_of, write_png
from tests.reliability.helpers import leftovers

#: Bytes planted in files the server must never read; they must never reach the vendor.
MARKER = b"KLING-RELIABILITY-SECRET-MARKER"
#: Seconds any single tool call may take before the test calls it a hang.
CALL_LIMIT = 60.0
#: Shared by the property-based runs; each test sets its own number of cases.
HOSTILE_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the autouse clean_env fixture; harmless here
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)


# --- hostile files ------------------------------------------------------------------------------


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A real 1-bit greyscale PNG of ``width`` x ``height`` zeros: tiny on disk, huge decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    packer = zlib.compressobj(9)
    block = row * 256
    parts = [packer.compress(block) for _ in range(height // 256)]
    parts.append(packer.compress(row * (height % 256)))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(parts))
        + _chunk(b"IEND", b"")
    )


def marked_png(path: Path) -> Path:
    """A valid image with MARKER inside (a text chunk), so its bytes are recognisable if sent."""
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("secret", MARKER.decode())
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (640, 480), (200, 10, 10)).save(path, format="PNG", pnginfo=info)
    return path


def plant_files(inputs: Path, outside: Path) -> dict[str, Path]:
    """Hostile files inside the allowed input folder (and one secret outside it)."""
    files: dict[str, Path] = {"ok": write_png(inputs / "ok.png")}
    secret = marked_png(outside / "secret.png")
    (outside / "id_rsa").write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\n" + MARKER + b"\n")
    files["hidden"] = marked_png(inputs / ".hidden" / "secret.png")
    (inputs / ".env").write_bytes(b"KLING_API_KEY=" + MARKER)
    files["dotenv"] = inputs / ".env"
    sparse = inputs / "huge-sparse.png"
    with open(sparse, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.truncate(150 * 1024 * 1024)  # 150 MB, almost none of it on disk
    files["sparse"] = sparse
    files["bomb"] = inputs / "bomb.png"
    files["bomb"].write_bytes(bomb_png(30_000, 30_000))  # 900 megapixels: Pillow's own limit
    files["bomb_64mp"] = inputs / "bomb-81mp.png"
    files["bomb_64mp"].write_bytes(bomb_png(9_000, 9_000))  # 81 MP: over our 64 MP limit only
    files["png_garbage"] = inputs / "garbage.png"
    files["png_garbage"].write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(4096))
    whole = files["ok"].read_bytes()
    files["png_truncated"] = inputs / "truncated.png"
    files["png_truncated"].write_bytes(whole[: len(whole) // 2])
    files["empty"] = inputs / "empty.png"
    files["empty"].write_bytes(b"")
    files["fifo"] = inputs / "pipe.png"
    os.mkfifo(files["fifo"])
    files["folder"] = inputs / "folder.png"
    files["folder"].mkdir()
    links = {
        "link_out": secret,
        "link_key": outside / "id_rsa",
        "link_passwd": Path("/etc/passwd"),
        "link_device": Path("/dev/zero"),
    }
    for name, target in links.items():
        files[name] = inputs / f"{name}.png"
        files[name].symlink_to(target)
    files["link_loop"] = inputs / "loop.png"
    files["link_loop"].symlink_to(files["link_loop"])
    files["outside_secret"] = secret
    files["outside_key"] = outside / "id_rsa"
    return files


STATIC_PATHS = [
    "/etc/passwd",
    "/etc/shadow",
    "~/.ssh/id_rsa",
    "~/.aws/credentials",
    "~",
    "/",
    "..",
    "../../../../../../etc/passwd",
    "/dev/zero",
    "/dev/urandom",
    "/dev/stdin",
    "/proc/self/environ",
    "/proc/self/mem",
    "/sys/kernel/notes",
    "file:///etc/passwd",
    "FILE:///etc/passwd",
    "C:\\Windows\\win.ini",
    "\\\\evil-host\\share\\x.png",
    "/tmp/a\x00b.png",
    "data:image/png;base64,AAAA",
    "data:,hello",
    "data:image/png;base64," + "A" * 5000,
    "http://",
    "https://[::1",
    "https://127.0.0.1:9/image.png",
    "ftp://127.0.0.1/x.png",
    "javascript:alert(1)",
    " ",
    "",
]


# --- the module's server ------------------------------------------------------------------------


@dataclass
class Live:
    """The running simulator, server and client, reached from sync tests through the portal."""

    portal: BlockingPortal
    client: Client
    sim: Simulator
    settings: Settings
    files: dict[str, Path]
    task_ids: list[str] = field(default_factory=list)
    calls: int = 0

    def call(self, tool: str, args: dict[str, Any]) -> CallToolResult:
        async def bounded() -> CallToolResult:
            with anyio.fail_after(CALL_LIMIT):
                return await self.client.call_tool(tool, args)

        self.calls += 1
        return self.portal.call(bounded)


@contextlib.asynccontextmanager
async def _running(root: Path) -> AsyncIterator[tuple[Client, Simulator, Settings, dict[str, Path]]]:
    inputs, outside = root / "inputs", root / "outside"
    inputs.mkdir()
    outside.mkdir()
    files = plant_files(inputs, outside)
    # Tasks never finish during the module (no downloads); every wait budget is tiny.
    async with serve_sim(duration=3600, image_scale=0.1) as vendor:
        sim, base_url = vendor.sim, vendor.base_url
        app_settings = Settings(
            api_key=SecretStr(TEST_API_KEY),
            api_base_url=base_url,
            output_dir=root / "out",
            input_dirs=[inputs, root / "out"],
            wait_seconds=0.05,
            poll_initial_seconds=0.05,
            poll_max_seconds=0.05,
            http_timeout=10,
            download_allow_private=True,
        )
        async with Client(build_server(app_settings)) as client:
            yield client, sim, app_settings, files


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("hostile")
    with pytest.MonkeyPatch.context() as mp:
        for name in list(os.environ):
            if name.startswith("KLING_"):
                mp.delenv(name)
        with (
            start_blocking_portal(backend="asyncio") as portal,
            portal.wrap_async_context_manager(_running(root)) as (client, sim, app_settings, files),
        ):
            handle = Live(portal, client, sim, app_settings, files)
            for prompt in ("A quiet harbour", "A red kite"):
                created = handle.call("create_image", {"prompt": prompt})
                assert not created.is_error, text_of(created)
                assert created.structured_content is not None
                handle.task_ids.append(created.structured_content["task_id"])
            yield handle
            # Whatever ran (the normal or the slow selection): the server still answers, nothing
            # secret reached the vendor, and no partial file was left behind.
            assert not handle.call("list_tasks", {}).is_error
            nothing_secret_reached_the_vendor(handle)
            assert leftovers(app_settings.output_dir) == []


# --- what every answer must be --------------------------------------------------------------------


def check_answer(tool: str, args: dict[str, Any], result: CallToolResult) -> None:
    """A valid result, or a tool error a model can read. Never a crash dressed as an error."""
    if result.is_error:
        message = text_of(result).strip()
        event(f"{tool}: tool error ({_kind_of_error(message)})")
        assert message, (tool, args)
        assert "failed unexpectedly" not in message, (tool, _shown(args), message)
        assert "Traceback" not in message, (tool, _shown(args), message)
        return
    data = result.structured_content
    event(f"{tool}: result")
    assert isinstance(data, dict), (tool, _shown(args))
    assert text_of(result).strip(), (tool, _shown(args))
    if tool == "list_tasks":
        assert isinstance(data["tasks"], list)
    else:
        assert isinstance(data["task_id"], str) and data["task_id"]
        assert data["status"] in ("submitted", "processing", "succeeded", "failed")
        if not data["done"]:
            assert data["next_call"] == f'wait_for_task(task_id="{data["task_id"]}")'


def _kind_of_error(message: str) -> str:
    """A coarse label for the statistics (``--hypothesis-show-statistics``)."""
    if "validation error" in message:
        return "arguments refused by the schema"
    if "Kling API error" in message:
        return "refused by the vendor"
    if "images[" in message:
        return "input image refused"
    if "is not allowed" in message or "<<<" in message or "inputs;" in message:
        return "refused by the model rules"
    if "No answer about task" in message:
        return "no answer within the budget"
    return "other refusal"


def _shown(args: dict[str, Any]) -> str:
    text = repr(args)
    return text if len(text) < 400 else text[:400] + "..."


def nothing_secret_reached_the_vendor(live: Live) -> None:
    """Every image the vendor received is a URL or a real image, and none carries the marker."""
    for task in live.sim.tasks.values():
        for item in task.body.get("image_list") or []:
            value = item["image"]
            if value.startswith(("http://", "https://")):
                continue
            data = base64.b64decode(value)
            assert sniff(data).kind in ("png", "jpeg"), task.task_id
            assert MARKER not in data, task.task_id


# --- hypothesis strategies -------------------------------------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
huge_strings = st.builds(
    lambda piece, count: piece * count,
    st.sampled_from(["x", "\x00", "é", "🙂", "<<<image_1>>>", "../", "A", "\u202e", " "]),
    st.integers(min_value=2_600, max_value=200_000),
)
nasty_text = (
    st.text(max_size=60)
    | st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)
    | st.sampled_from(STATIC_PATHS)
    | huge_strings
)


def any_value(typed: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly values of roughly the right type, often anything at all."""
    return typed | json_values | nasty_text


def numbers_near(low: float, high: float) -> st.SearchStrategy[Any]:
    edges = [low, high, low - 1, high + 1, 0, -1, 1e308, -1e308, 2**63, -(2**63)]
    return (
        st.sampled_from(edges)
        | st.integers(min_value=int(low) - 5, max_value=int(high) + 5)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from(["1", "0", "-1", "1e3", "nan", "inf", " 5 ", "0x10", "1_0"])
    )


def with_extra_keys(fixed: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    extras = st.dictionaries(st.text(max_size=12), json_values, max_size=3)
    return st.builds(lambda a, b: {**b, **a}, fixed, extras)


def _number(value: Any) -> float | None:
    """The number pydantic's lax mode may read from ``value`` (bools and numeric strings too)."""
    if isinstance(value, bool | int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def tiny_budgets(args: dict[str, Any]) -> dict[str, Any]:
    """Any wait budget the tool would accept becomes a tiny one: the run must not sleep for real."""
    for key in ("wait_seconds", "timeout_seconds"):
        number = _number(args.get(key))
        if number is not None and 0.05 < number <= 900:
            args[key] = 0.01
    return args


def defang_callbacks(args: dict[str, Any]) -> dict[str, Any]:
    """A callback URL the vendor would accept must point at a closed loopback port (no network)."""
    value = args.get("callback_url")
    if isinstance(value, str) and value.strip().lower().startswith(("http://", "https://")):
        args["callback_url"] = "http://127.0.0.1:9/callback"
    return args


def image_value(live: Live) -> st.SearchStrategy[Any]:
    """One ``images`` entry: a planted hostile file, a tricky path, a static one or any text."""
    inputs = live.files["ok"].parent
    planted = [str(p) for p in live.files.values()]
    tricky = [
        str(inputs / ".." / "outside" / "secret.png"),
        str(inputs / ".hidden" / ".." / ".hidden" / "secret.png"),
        str(inputs / ("a" * 300 + ".png")),
        str(inputs / "ok.png" / ".."),
        str(inputs / "ok.png") + "\x00.txt",
        str(inputs / "ok.png").upper(),
        str(inputs / "ok.png"),
    ]
    return st.sampled_from(planted + tricky + STATIC_PATHS) | nasty_text


def create_args(live: Live) -> st.SearchStrategy[dict[str, Any]]:
    """Three in four well-typed (so the call gets past the schema into the rules, the files and the
    vendor), one in four anything at all."""
    prompts = st.sampled_from(
        [
            "A lighthouse",
            "Use <<<image_1>>>",
            "<<<image_1>>> and <<<image_2>>> and <<<image_3>>>",
            "Poster of <<<element_1>>>",
            "<<<image_0>>> <<<element_99>>> <<<object_1>>>",
            "x" * 2500,
        ]
    ) | st.text(min_size=1, max_size=80)
    element_ids = st.lists(
        st.integers(min_value=-(2**70), max_value=2**70)
        | st.integers(min_value=1, max_value=2**63 - 1)
        | st.sampled_from(["829836802793406551", "1", "9" * 19]),
        max_size=4,
    )
    bad_element_ids = st.lists(
        element_ids | st.sampled_from(["0", "-1", "12ab", "9" * 25, "", "1e5", " 1"]), max_size=12
    )
    models = st.sampled_from(["kling-image-o1", "kling-v3-omni"])
    resolutions = st.sampled_from(["1k", "2k", "4k"])
    ratios = st.sampled_from(["16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9", "auto"])
    external_ids = st.sampled_from(["job-1", "job-2", "a" * 128]) | st.from_regex(
        r"[A-Za-z0-9._:-]{1,128}", fullmatch=True
    )
    callbacks = st.sampled_from(["http://127.0.0.1:9/cb", "ftp://x", "http://", "cb", "https://127.0.0.1:9"])
    typed = st.fixed_dictionaries(
        {"prompt": prompts | st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)},
        optional={
            "images": st.lists(image_value(live), max_size=3),
            "element_ids": element_ids,
            "model": models,
            "resolution": resolutions,
            "aspect_ratio": ratios | st.none(),
            "n": st.integers(min_value=1, max_value=9),
            "result_type": st.sampled_from(["single", "series"]),
            "series_amount": st.none() | st.integers(min_value=0, max_value=12) | st.just("auto"),
            "watermark": st.none() | st.booleans(),
            "external_task_id": external_ids,
            "callback_url": callbacks,
            "wait_seconds": st.sampled_from([0, 0.01]),
        },
    )
    wild = st.fixed_dictionaries(
        {},
        optional={
            "prompt": any_value(prompts | huge_strings),
            "images": any_value(st.lists(image_value(live), max_size=12)),
            "element_ids": any_value(bad_element_ids),
            "model": any_value(st.sampled_from(["kling-image-o1", "kling-v9", "KLING-IMAGE-O1"])),
            "resolution": any_value(st.sampled_from(["1k", "8k", "1K"])),
            "aspect_ratio": any_value(st.sampled_from(["16:9", "0:0", "1:0", "-1:1"])),
            "n": any_value(numbers_near(1, 9)),
            "result_type": any_value(st.sampled_from(["single", "series", "both"])),
            "series_amount": any_value(numbers_near(2, 9) | st.just("auto")),
            "watermark": any_value(st.booleans()),
            "external_task_id": any_value(external_ids | st.just("a" * 129)),
            "callback_url": any_value(callbacks),
            "wait_seconds": any_value(numbers_near(0, 900)),
        },
    )
    return st.one_of(typed, typed, typed, with_extra_keys(wild)).map(tiny_budgets).map(defang_callbacks)


def task_ids(live: Live) -> st.SearchStrategy[Any]:
    return (
        st.sampled_from(live.task_ids)
        | st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)
        | st.sampled_from([".", "..", "...", "a" * 128, "job-1", "8" * 19, "0"])
    )


def wild_task_ids() -> st.SearchStrategy[Any]:
    extra = st.sampled_from(["a" * 129, "%2e%2e", "../x", "a/b", "a?b=c", "a#b", "../../etc/passwd", ""])
    return extra | json_values | nasty_text


def read_args(live: Live, *, wait: bool) -> st.SearchStrategy[dict[str, Any]]:
    typed: dict[str, st.SearchStrategy[Any]] = {"task_id": task_ids(live)}
    wild: dict[str, st.SearchStrategy[Any]] = {"task_id": any_value(task_ids(live) | wild_task_ids())}
    if wait:
        typed["timeout_seconds"] = st.sampled_from([0.001, 0.01, 0.05])
        wild["timeout_seconds"] = any_value(numbers_near(0, 900))
    return st.one_of(
        st.fixed_dictionaries(typed),
        st.fixed_dictionaries(typed),
        with_extra_keys(st.fixed_dictionaries({}, optional=wild)),
    ).map(tiny_budgets)


def list_args() -> st.SearchStrategy[dict[str, Any]]:
    typed = st.fixed_dictionaries(
        {},
        optional={
            "page": st.integers(min_value=1, max_value=1000),
            "page_size": st.integers(min_value=1, max_value=100),
        },
    )
    wild = st.fixed_dictionaries(
        {}, optional={"page": any_value(numbers_near(1, 1000)), "page_size": any_value(numbers_near(1, 100))}
    )
    return typed | with_extra_keys(wild)


# --- the property-based runs -----------------------------------------------------------------------


@settings(HOSTILE_SETTINGS, max_examples=1200)
@given(data=st.data())
def test_create_image_survives_any_arguments(live: Live, data: st.DataObject) -> None:
    args = data.draw(create_args(live), label="arguments")
    check_answer("create_image", args, live.call("create_image", args))


@settings(HOSTILE_SETTINGS, max_examples=400)
@given(data=st.data())
def test_get_task_survives_any_arguments(live: Live, data: st.DataObject) -> None:
    args = data.draw(read_args(live, wait=False), label="arguments")
    check_answer("get_task", args, live.call("get_task", args))


@settings(HOSTILE_SETTINGS, max_examples=400)
@given(data=st.data())
def test_wait_for_task_survives_any_arguments(live: Live, data: st.DataObject) -> None:
    args = data.draw(read_args(live, wait=True), label="arguments")
    started = time.monotonic()
    result = live.call("wait_for_task", args)
    check_answer("wait_for_task", args, result)
    assert time.monotonic() - started < 30  # budgets are tiny: no call may hang on


@settings(HOSTILE_SETTINGS, max_examples=300)
@given(data=st.data())
def test_list_tasks_survives_any_arguments(live: Live, data: st.DataObject) -> None:
    args = data.draw(list_args(), label="arguments")
    check_answer("list_tasks", args, live.call("list_tasks", args))


@pytest.mark.slow
@settings(HOSTILE_SETTINGS, max_examples=8000)
@given(data=st.data())
def test_every_tool_survives_a_long_run(live: Live, data: st.DataObject) -> None:
    """The same properties, four times as many cases again, tools interleaved (slow run only)."""
    tool = data.draw(
        st.sampled_from(["create_image", "get_task", "wait_for_task", "list_tasks"]), label="tool"
    )
    strategy = {
        "create_image": create_args(live),
        "get_task": read_args(live, wait=False),
        "wait_for_task": read_args(live, wait=True),
        "list_tasks": list_args(),
    }[tool]
    args = data.draw(strategy, label="arguments")
    check_answer(tool, args, live.call(tool, args))


# --- hostile files and paths, table-driven ---------------------------------------------------------

# (case, path: a planted file's name or a literal, words the error must contain). Each goes through
# create_image; none may reach the vendor.
PATH_CASES: list[tuple[str, str, list[str]]] = [
    ("huge sparse file (150 MB)", "@sparse", ["150 MB", "refused"]),
    ("decompression bomb (900 MP)", "@bomb", ["decompression bomb"]),
    ("over the 64 MP limit", "@bomb_64mp", ["9000x9000", "megapixels"]),
    ("PNG signature, garbage body", "@png_garbage", ["not a valid image"]),
    ("truncated PNG", "@png_truncated", ["damaged or cut off"]),
    ("zero bytes", "@empty", ["empty"]),
    ("named pipe", "@fifo", ["named pipe"]),
    ("folder named .png", "@folder", ["folder"]),
    ("symlink to a file outside", "@link_out", ["outside"]),
    ("symlink to a private key outside", "@link_key", ["outside"]),
    ("symlink to /etc/passwd", "@link_passwd", ["outside"]),
    ("symlink to a device", "@link_device", ["outside"]),
    ("symlink loop", "@link_loop", ["loop.png"]),
    ("hidden folder", "@hidden", ["hidden"]),
    ("dot-env file", "@dotenv", ["hidden"]),
    ("secret outside, directly", "@outside_secret", ["outside"]),
    ("dot-dot into outside", "{inputs}/../outside/secret.png", ["outside"]),
    ("home ssh key", "~/.ssh/id_rsa", ["outside"]),
    ("proc environ", "/proc/self/environ", ["outside"]),
    ("NUL in the path", "{inputs}/ok.png\x00.txt", ["not a usable file path"]),
    ("name too long for the file system", "{inputs}/" + "a" * 300 + ".png", ["too long"]),
    ("path too long for the file system", "{inputs}/" + "a/" * 2100 + "x.png", ["too long"]),
    ("file: URL", "file:///etc/passwd", ["file: URLs are not accepted"]),
]


@pytest.mark.parametrize(("case", "raw", "words"), PATH_CASES, ids=[c[0] for c in PATH_CASES])
def test_hostile_path_is_refused_before_anything_is_sent(
    case: str, raw: str, words: list[str], live: Live
) -> None:
    inputs = live.files["ok"].parent
    value = str(live.files[raw[1:]]) if raw.startswith("@") else raw.format(inputs=inputs)
    before = live.sim.counters.create_requests
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    result = live.call("create_image", {"prompt": "Use <<<image_1>>>", "images": [value]})
    elapsed = time.monotonic() - started
    assert result.is_error, case
    message = text_of(result)
    for word in words:
        assert word.lower() in message.lower(), (case, message)
    assert "images[0]" in message, (case, message)
    assert "unexpectedly" not in message, (case, message)
    assert live.sim.counters.create_requests == before  # nothing reached the vendor
    # Refused from the header or the file's size: never read whole, never decoded.
    assert elapsed < 10, (case, elapsed)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 300, (case, grown_mb)


def test_the_server_still_answers_and_nothing_leaked(live: Live) -> None:
    """After every hostile call above: a normal create still works, nothing secret was sent, and
    no partial file was left in the output folder."""
    good = live.call(
        "create_image", {"prompt": "Use <<<image_1>>>", "images": [str(live.files["ok"])], "n": 2}
    )
    assert not good.is_error, text_of(good)
    assert good.structured_content is not None
    task_id = good.structured_content["task_id"]
    assert live.sim.tasks[task_id].spec.n == 2
    listed = live.call("list_tasks", {"page_size": 5})
    assert not listed.is_error
    assert listed.structured_content is not None
    assert listed.structured_content["tasks"][0]["task_id"] == task_id
    nothing_secret_reached_the_vendor(live)
    assert leftovers(live.settings.output_dir) == []
