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


# (arguments, words the message must contain)
RULE_CASES: list[tuple[str, dict[str, Any], list[str]]] = [
    (
        "reference beyond inputs",
        {"prompt": "Put <<<image_3>>> here", "images": ["@a", "@b"]},
        ["image_3", "2"],
    ),
    ("element reference without elements", {"prompt": "Use <<<element_1>>>"}, ["element_1"]),
    ("o1 at 4k", {"prompt": "A cat", "resolution": "4k"}, ["4k", "kling-v3-omni"]),
    ("o1 series", {"prompt": "A cat", "result_type": "series"}, ["series", "kling-v3-omni"]),
    (
        "v3 text-only auto ratio",
        {"prompt": "A cat", "model": "kling-v3-omni", "aspect_ratio": "auto"},
        ["aspect_ratio", "auto"],
    ),
    ("too many inputs", {"prompt": "A cat", "images": ["@a"] * 6, "element_ids": [1, 2, 3, 4, 5]}, ["10"]),
    ("n over 9", {"prompt": "A cat", "n": 10}, ["n"]),
    ("empty prompt", {"prompt": ""}, ["prompt"]),
    ("prompt too long", {"prompt": "x" * 2501}, ["prompt"]),
    (
        "series amount out of range",
        {
            "prompt": "A",
            "model": "kling-v3-omni",
            "result_type": "series",
            "series_amount": 12,
            "aspect_ratio": "1:1",
        },
        ["series_amount"],
    ),
    ("element id not a number", {"prompt": "A cat", "element_ids": ["12ab"]}, ["element_ids"]),
    ("wait too long", {"prompt": "A cat", "wait_seconds": 5000}, ["wait_seconds"]),
]


@pytest.mark.parametrize(("case", "args", "words"), RULE_CASES, ids=[c[0] for c in RULE_CASES])
async def test_rule_refusals(
    case: str,
    args: dict[str, Any],
    words: list[str],
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
    for word in words:
        assert word in message, (case, message)
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
