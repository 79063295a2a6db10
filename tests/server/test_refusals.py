"""Every refusal comes back as a tool error whose message says what to change, and none of them
reaches the vendor (no credit is spent on a request the rules already refuse)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.app import build_server
from tests.conftest import SimHandle, text_of, write_png

pytestmark = pytest.mark.anyio


# (case, arguments, what was wrong (naming the tool's own argument), how to fix it)
RULE_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "reference beyond inputs",
        {"prompt": "Put <<<image_3>>> here", "images": ["@a", "@b"]},
        "prompt='<<<image_3>>>' is not allowed: refers to image 3 but only 2 images were given in the "
        "images argument.",
        "Add the missing images to the images argument, or refer only to image_1..image_2.",
    ),
    (
        "element reference without elements",
        {"prompt": "Use <<<element_1>>>"},
        "prompt='<<<element_1>>>' is not allowed: refers to element 1 but only 0 elements were given in "
        "the element_ids argument.",
        "Add elements to the element_ids argument, or remove the reference from the prompt.",
    ),
    (
        "o1 at 4k",
        {"prompt": "A cat", "resolution": "4k"},
        "resolution='4k' is not allowed: kling-image-o1 supports 1k, 2k.",
        "Choose one of 1k, 2k, or use kling-v3-omni for 4k.",
    ),
    (
        "o1 series",
        {"prompt": "A cat", "result_type": "series"},
        "result_type='series' is not allowed: kling-image-o1 does not support series output.",
        "Use model=kling-v3-omni for a series, or result_type='single' with n images.",
    ),
    (
        "v3 text-only auto ratio",
        {"prompt": "A cat", "model": "kling-v3-omni", "aspect_ratio": "auto"},
        "aspect_ratio='auto' is not allowed: kling-v3-omni does not accept 'auto' for pure text-to-image",
        "Choose an explicit aspect ratio such as 1:1 or 16:9, or give a reference image.",
    ),
    (
        "too many inputs",
        {"prompt": "A cat", "images": ["@a"] * 6, "element_ids": [1, 2, 3, 4, 5]},
        "images and element_ids together hold 11 inputs (6 images + 5 elements); at most 10 are allowed.",
        "Remove 1 of them.",
    ),
    (
        "series amount out of range",
        {
            "prompt": "A",
            "model": "kling-v3-omni",
            "result_type": "series",
            "series_amount": 12,
            "aspect_ratio": "1:1",
        },
        "series_amount=12 is not allowed:",
        "must be between 2 and 9, or 'auto'.",
    ),
]

# Refused by the tool's schema (the SDK's message): (case, arguments, the argument, the bound).
SCHEMA_CASES: list[tuple[str, dict[str, Any], str, str]] = [
    ("n over 9", {"prompt": "A cat", "n": 10}, "n", "less than or equal to 9"),
    ("empty prompt", {"prompt": ""}, "prompt", "at least 1 character"),
    ("prompt too long", {"prompt": "x" * 2501}, "prompt", "at most 2500 characters"),
    ("element id not a number", {"prompt": "A cat", "element_ids": ["12ab"]}, "element_ids", "integer"),
    ("wait too long", {"prompt": "A cat", "wait_seconds": 5000}, "wait_seconds", "less than or equal to 900"),
]

_WIRE_NAMES = ("image_list", "element_list", "model_name", "watermark_info")


@pytest.mark.parametrize(("case", "args", "what", "fix"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
async def test_rule_refusals(
    case: str,
    args: dict[str, Any],
    what: str,
    fix: str,
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
    workdir: Path,
) -> None:
    a, b = write_png(workdir / "a.png"), write_png(workdir / "b.png")
    args = dict(args)
    if "images" in args:
        args["images"] = [str(a) if x == "@a" else str(b) for x in args["images"]]
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        result = await client.call_tool("create_image", args)
    assert result.is_error, case
    message = text_of(result)
    # What was wrong, in the tool's own argument names, then the fix as its own sentence.
    assert what in message, (case, message)
    assert fix in message, (case, message)
    assert message.rstrip().endswith("."), message
    assert not any(name in message for name in _WIRE_NAMES), message
    assert simulator.sim.counters.create_requests == 0


@pytest.mark.parametrize(
    ("case", "args", "argument", "bound"), SCHEMA_CASES, ids=[c[0] for c in SCHEMA_CASES]
)
async def test_schema_refusals_name_the_argument_and_the_bound(
    case: str,
    args: dict[str, Any],
    argument: str,
    bound: str,
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
) -> None:
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        result = await client.call_tool("create_image", args)
    assert result.is_error, case
    lines = text_of(result).splitlines()
    assert argument in [line.strip().split(".")[0] for line in lines], (case, lines)
    assert any(bound in line for line in lines), (case, lines)
    assert simulator.sim.counters.create_requests == 0


def hidden_key(home: Path) -> str:
    ssh = home / ".ssh"
    ssh.mkdir(exist_ok=True)
    write_png(ssh / "id_rsa")  # even a real image is refused from a hidden folder
    return str(ssh / "id_rsa")


def symlink_out(workdir: Path, tmp_path: Path) -> str:
    outside = write_png(tmp_path / "outside" / "secret.png")
    link = workdir / "innocent.png"
    link.symlink_to(outside)
    return str(link)


PATH_CASES: list[tuple[str, Callable[[Path, Path, Path], str], list[str]]] = [
    ("dot-dot escape", lambda w, t, h: str(w / ".." / "outside.png"), ["outside"]),
    ("etc passwd", lambda w, t, h: "/etc/passwd", ["/etc/passwd"]),
    ("hidden ssh key", lambda w, t, h: hidden_key(h), ["hidden"]),
    ("symlink out", lambda w, t, h: symlink_out(w, t), ["outside"]),
    ("device file", lambda w, t, h: "/dev/zero", ["/dev/zero"]),
    ("a folder", lambda w, t, h: str(w), ["folder"]),
    ("relative path", lambda w, t, h: "pictures/cat.png", ["absolute"]),
    ("missing with hint", lambda w, t, h: str(w / "ref.pgn"), ["ref.png"]),
    ("not an image", lambda w, t, h: str(_write(w / "notes.png", b"just some text, honestly")), ["image"]),
    ("zero bytes", lambda w, t, h: str(_write(w / "empty.png", b"")), ["empty"]),
    ("too small", lambda w, t, h: str(write_png(w / "tiny.png", (200, 640))), ["200x640", "300"]),
    ("too narrow", lambda w, t, h: str(write_png(w / "strip.png", (300, 800))), ["2.5"]),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("case", "make_path", "words"), PATH_CASES, ids=[c[0] for c in PATH_CASES])
async def test_input_path_refusals(
    case: str,
    make_path: Callable[[Path, Path, Path], str],
    words: list[str],
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
    workdir: Path,
    tmp_path: Path,
    clean_env: Path,
) -> None:
    write_png(workdir / "ref.png")
    write_png(tmp_path / "outside.png")
    value = make_path(workdir, tmp_path, clean_env)
    # The home folder is allowed too, so the hidden-folder rule is what refuses ~/.ssh.
    settings = make_settings(simulator.base_url, input_dirs=[workdir, clean_env])
    async with Client(build_server(settings)) as client:
        result = await client.call_tool("create_image", {"prompt": "Use <<<image_1>>>", "images": [value]})
    assert result.is_error, case
    message = text_of(result)
    for word in words:
        assert word.lower() in message.lower(), (case, message)
    assert "images[0]" in message
    assert simulator.sim.counters.create_requests == 0
    assert os.environ.get("KLING_API_KEY") is None  # sanity: nothing leaked from the developer's shell


async def test_unknown_task_is_a_clear_error(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        for tool in ("get_task", "wait_for_task"):
            result = await client.call_tool(tool, {"task_id": "no-such-task"})
            assert result.is_error
            assert "1201" in text_of(result) or "not found" in text_of(result).lower()
        bad = await client.call_tool("get_task", {"task_id": "../../etc/passwd"})
        assert bad.is_error
        assert simulator.sim.counters.queries_by_id.get("../../etc/passwd") is None
