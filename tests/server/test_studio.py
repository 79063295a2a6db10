"""The studio view (MCP Apps) through real in-memory MCP clients, with and without the extension,
against the simulator over loopback HTTP."""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from PIL import Image

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.answers import ImageInfo, TaskAnswer
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling.capabilities import MODEL_CAPABILITIES
from kling_omni_mcp.server.app import build_server
from kling_omni_mcp.server.http import build_http_app
from kling_omni_mcp.server.studio import SNAPSHOT_TOOL, STUDIO_URI, THUMBNAIL_MAX_BYTES, snapshot_of
from tests.conftest import SimHandle, text_of

pytestmark = pytest.mark.anyio

MODEL_TOOLS = {"create_image", "get_task", "wait_for_task", "list_tasks", "get_account"}


def apps_client(server: Any) -> Client:
    """A client that advertises MCP Apps the way hosts do (extension id + the app MIME type)."""
    return Client(server, extensions=[advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})])


async def snapshot_until_done(client: Client, task_id: str, *, limit: float = 20) -> list[dict[str, Any]]:
    """Poll the app-only tool like the view does; every snapshot seen, the last one final."""
    seen: list[dict[str, Any]] = []
    with anyio.fail_after(limit):
        while True:
            result = await client.call_tool(SNAPSHOT_TOOL, {"task_id": task_id})
            assert not result.is_error, text_of(result)
            assert result.structured_content is not None
            seen.append(result.structured_content)
            if result.structured_content["done"]:
                return seen
            await anyio.sleep(0.2)


async def test_tools_point_at_the_view_and_the_snapshot_tool_is_app_only(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with apps_client(build_server(make_settings(simulator.base_url))) as client:
        listing = await client.list_tools()
        by_name = {t.name: t for t in listing.tools}
        assert set(by_name) == MODEL_TOOLS | {SNAPSHOT_TOOL}
        for name in ("create_image", "wait_for_task"):
            assert by_name[name].meta == {"ui": {"resourceUri": STUDIO_URI}}
        for name in ("get_task", "list_tasks", "get_account"):
            assert not (by_name[name].meta or {}).get("ui")
        snapshot = by_name[SNAPSHOT_TOOL]
        assert snapshot.meta == {"ui": {"resourceUri": STUDIO_URI, "visibility": ["app"]}}
        assert snapshot.description is not None and len(snapshot.description) < 80
        assert snapshot.annotations is not None and snapshot.annotations.read_only_hint is True
        size = len(listing.model_dump_json(by_alias=True, exclude_none=True))
        assert size < 10_000, size  # the issue: the whole tools/list under 10,000 characters
        # The server says it speaks MCP Apps.
        assert EXTENSION_ID in (client.server_capabilities.extensions or {})


async def test_the_view_resource_is_self_contained_html_for_apps(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with apps_client(build_server(make_settings(simulator.base_url))) as client:
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert listed[STUDIO_URI].mime_type == APP_MIME_TYPE
        read = await client.read_resource(STUDIO_URI)
    [content] = read.contents
    assert content.mime_type == APP_MIME_TYPE
    assert content.meta == {"ui": {"prefersBorder": True}}
    html = getattr(content, "text", "")
    assert html.startswith("<!doctype html>")
    # Nothing that needs the network or a relaxed CSP.
    for forbidden in (
        "<script src",
        "<link",
        "fetch(",
        "blob:",
        "XMLHttpRequest",
        "WebSocket",
        "innerHTML",
        "@import",
    ):
        assert forbidden not in html, forbidden
    assert not re.search(r"(src|href)\s*=\s*[\"']https?:", html)
    assert "console.error" not in html
    # The price table comes from the rules (one source), so estimated units match create_image's.
    prices = json.loads(re.search(r"var PRICES = (\{.*?\});", html).group(1))  # type: ignore[union-attr]
    assert prices == {name: dict(c.units_per_image) for name, c in MODEL_CAPABILITIES.items()}
    # The bridge methods the view speaks.
    for method in (
        "ui/initialize",
        "ui/notifications/initialized",
        "ui/notifications/tool-input",
        "ui/notifications/tool-result",
        "ui/notifications/tool-cancelled",
        "ui/notifications/host-context-changed",
        "ui/notifications/size-changed",
        "ui/open-link",
        "ui/message",
        "ui/download-file",
        "resources/read",
        "tools/call",
    ):
        assert f'"{method}"' in html, method
    assert "event.source !== window.parent" in html


async def test_snapshot_follows_a_task_and_thumbnails_read_as_small_jpegs(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with apps_client(build_server(make_settings(simulator.base_url))) as client:
        created = await client.call_tool("create_image", {"prompt": "three foxes", "n": 3})
        assert not created.is_error, text_of(created)
        assert created.structured_content is not None
        task_id = created.structured_content["task_id"]
        seen = await snapshot_until_done(client, task_id)
        assert seen[0]["status"] in ("submitted", "processing", "succeeded")
        final = seen[-1]
        assert final["status"] == "succeeded" and final["model"] == "kling-image-o1"
        assert final["estimated_units"] == 24
        assert isinstance(final["elapsed_seconds"], float) and final["elapsed_seconds"] >= 0
        assert [img["index"] for img in final["images"]] == [0, 1, 2]
        # Small, and no Base64 anywhere in what the view gets.
        assert len(json.dumps(final)) < 5_000
        assert not re.search(r"[A-Za-z0-9+/]{200,}", json.dumps(final))
        for img in final["images"]:
            assert img["thumbnail_uri"] == f"kling://tasks/{task_id}/thumbnails/{img['index']}"
            assert img["image_uri"] == f"kling://tasks/{task_id}/images/{img['index']}"
            assert "link" not in img  # the simulator's links are plain http: no signed https link
            thumb = await client.read_resource(img["thumbnail_uri"])
            [blob] = thumb.contents
            assert blob.mime_type == "image/jpeg"
            data = base64.b64decode(blob.blob)  # type: ignore[union-attr]
            assert len(data) < THUMBNAIL_MAX_BYTES < 100_000
            with Image.open(io.BytesIO(data)) as picture:
                assert picture.format == "JPEG"
                assert 256 <= max(picture.size) <= 384
            again = await client.read_resource(img["thumbnail_uri"])
            assert again.contents[0].blob == blob.blob  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("ext", "pil_format", "mime"),
    [("png", "PNG", "image/png"), ("jpg", "JPEG", "image/jpeg"), ("webp", "WEBP", "image/webp")],
)
async def test_saved_images_read_with_their_real_mime_type(
    ext: str, pil_format: str, mime: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url)
    folder = settings.output_dir / "task-77"
    folder.mkdir(parents=True)
    Image.new("RGB", (400, 300), (200, 40, 40)).save(folder / f"task-77_0.{ext}", format=pil_format)
    async with Client(build_server(settings)) as client:
        read = await client.read_resource("kling://tasks/task-77/images/0")
        [content] = read.contents
        assert content.mime_type == mime  # was text/plain: a data: URL built from it showed nothing
        with Image.open(io.BytesIO(base64.b64decode(content.blob))) as picture:  # type: ignore[union-attr]
            assert picture.size == (400, 300)
        thumb = await client.read_resource("kling://tasks/task-77/thumbnails/0")
        assert thumb.contents[0].mime_type == "image/jpeg"
        missing = await client.call_tool(SNAPSHOT_TOOL, {"task_id": "no-such-task"})
        assert missing.is_error


async def test_snapshot_of_a_failed_task_carries_the_reason_and_what_to_do(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    simulator.sim.faults.fail_next_tasks(message="Sensitive content detected in the prompt")
    async with apps_client(build_server(make_settings(simulator.base_url))) as client:
        created = await client.call_tool("create_image", {"prompt": "something refused"})
        assert created.structured_content is not None
        final = (await snapshot_until_done(client, created.structured_content["task_id"]))[-1]
    assert final["status"] == "failed" and final["done"] is True
    assert final["status_message"] == "Sensitive content detected in the prompt"
    assert "Rephrase the prompt" in final["message"]
    assert final["images"] == []


async def test_a_client_without_apps_gets_todays_answers(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    """Same tools (no app-only tool), same result shapes, with or without the extension."""
    answers: dict[str, Any] = {}
    for label, make_client in (("plain", Client), ("apps", apps_client)):
        async with make_client(build_server(make_settings(simulator.base_url))) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            created = await client.call_tool("create_image", {"prompt": "a lighthouse", "wait_seconds": 20})
            assert not created.is_error, text_of(created)
            answers[label] = (names, created)
    plain_names, plain = answers["plain"]
    apps_names, apps = answers["apps"]
    assert plain_names == MODEL_TOOLS
    assert apps_names == MODEL_TOOLS | {SNAPSHOT_TOOL}
    assert (
        [b.type for b in plain.content]
        == [b.type for b in apps.content]
        == ["text", "resource_link", "image"]
    )
    assert plain.structured_content.keys() == apps.structured_content.keys()
    assert plain.meta == apps.meta  # nothing view-only is added to results
    # The text, links and preview stand alone for a host that shows no view.
    assert "Saved 1 image(s)" in text_of(plain)
    # A result bound to the view stays under 100 KB.
    assert len(apps.model_dump_json(by_alias=True)) < 100_000


def test_a_signed_https_link_is_offered_to_open_and_plain_http_is_not() -> None:
    """The view opens the vendor's signed link through the host (ui/open-link) only when it is https."""
    answer = TaskAnswer(
        task_id="t1",
        status="succeeded",
        done=True,
        images=[
            ImageInfo(
                index=0, url="https://cdn.example/t1_0.png?sig=abc", path="/x/t1_0.png", width=8, height=6
            ),
            ImageInfo(index=1, url="http://insecure.example/t1_1.png"),
        ],
    )
    first, second = snapshot_of(answer).images
    assert first.link == "https://cdn.example/t1_0.png?sig=abc"
    assert first.thumbnail_uri == "kling://tasks/t1/thumbnails/0"
    assert second.link is None and second.thumbnail_uri is None  # not saved yet: nothing to read


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stateless_http_still_lists_the_view_tool(
    mode: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    """Stateless HTTP keeps no handshake, so the client's capabilities are unknown per request:
    the app-only tool stays listed rather than vanish from a host that renders the view."""
    async with serve_asgi(build_http_app(make_settings(simulator.base_url), stateless=True)) as url:
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(30, read=60))
        transport = streamable_http_client(f"{url}/mcp", http_client=http)
        extension = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
        async with Client(transport, mode=mode, extensions=[extension]) as client:
            names = {t.name for t in (await client.list_tools()).tools}
    assert names == MODEL_TOOLS | {SNAPSHOT_TOOL}
