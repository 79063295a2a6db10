"""End to end through a real MCP client (in memory, both protocol eras) against the simulator
over loopback HTTP: what an agent in a host would see."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from PIL import Image

from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.app import build_server
from tests.conftest import SimHandle, sim_with, text_of, write_png

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]


async def create(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("create_image", args)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    return result.structured_content


@pytest.mark.parametrize("mode", MODES)
async def test_create_wait_get_list_round_trip(
    mode: str, simulator: SimHandle, make_settings: Callable[..., Settings], workdir: Path
) -> None:
    settings = make_settings(simulator.base_url)
    reference = write_png(workdir / "ref.png")
    server = build_server(settings)
    async with Client(server, mode=mode) as client:
        created = await create(client, prompt="A fox in the style of <<<image_1>>>", images=[str(reference)])
        task_id = created["task_id"]
        assert created["status"] in ("submitted", "processing")
        assert created["done"] is False
        assert created["estimated_units"] == 8
        assert created["model"] == "kling-image-o1"
        assert created["next_call"] == f'wait_for_task(task_id="{task_id}")'
        # The reference image reached the vendor as bare Base64 of the original bytes.
        record = simulator.sim.tasks[task_id]
        sent = record.body["image_list"][0]["image"]
        assert base64.b64decode(sent) == reference.read_bytes()

        waited = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 20})
        assert not waited.is_error, text_of(waited)
        data = waited.structured_content
        assert data is not None
        assert data["done"] is True and data["status"] == "succeeded"
        assert data["units_charged"] == "8"
        [image] = data["images"]
        saved = Path(image["path"])
        assert saved.is_file() and saved.is_relative_to(settings.output_dir)
        assert task_id in saved.name and "fox" not in saved.name
        with Image.open(saved) as img:
            assert img.format == "PNG"
        links = [b for b in waited.content if b.type == "resource_link"]
        assert [str(link.uri) for link in links] == [saved.as_uri()]
        assert links[0].mime_type == "image/png"

        got = await client.call_tool("get_task", {"task_id": task_id})
        assert not got.is_error
        assert got.structured_content is not None
        assert got.structured_content["images"][0]["path"] == str(saved)

        listed = await client.call_tool("list_tasks", {})
        assert not listed.is_error
        assert listed.structured_content is not None
        [row] = listed.structured_content["tasks"]
        assert row["task_id"] == task_id and row["status"] == "succeeded"
        assert row["image_count"] == 1 and row["paths"] == [str(saved)]

        resource = await client.read_resource(f"kling://tasks/{task_id}/images/0")
        blob = resource.contents[0]
        assert base64.b64decode(blob.blob) == saved.read_bytes()  # type: ignore[union-attr]


async def test_result_files_are_complete_and_sidecar_written(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url)
    async with Client(build_server(settings)) as client:
        created = await create(client, prompt="Three lighthouses", n=3, wait_seconds=20)
        assert created["done"] is True
        task_id = created["task_id"]
        paths = [Path(img["path"]) for img in created["images"]]
        assert len(paths) == 3 and len(set(paths)) == 3
        folder = paths[0].parent
        # Only finished files and the sidecar: no temporary or partial file is left behind.
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted([*(p.name for p in paths), f"{task_id}.json"])
        sidecar = json.loads((folder / f"{task_id}.json").read_text())
        assert sidecar["prompt"] == "Three lighthouses"
        assert sidecar["model"] == "kling-image-o1"
        assert sidecar["task_id"] == task_id
        assert sidecar["external_task_id"] == created["external_task_id"]
        assert sidecar["estimated_units"] == 24 and sidecar["units_charged"] == "24"
        assert [img["url"] for img in sidecar["images"]] == [img["url"] for img in created["images"]]
        assert [img["path"] for img in sidecar["images"]] == [str(p) for p in paths]

        # A second look does not download again.
        before = simulator.sim.counters.downloads
        again = await client.call_tool("get_task", {"task_id": task_id})
        assert not again.is_error
        assert simulator.sim.counters.downloads == before


@sim_with(duration=6.0)
async def test_progress_notifications_and_budget_running_out_then_resumed(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url)
    async with Client(build_server(settings)) as client:
        created = await create(client, prompt="A slow painting")
        task_id = created["task_id"]
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        first = await client.call_tool(
            "wait_for_task", {"task_id": task_id, "timeout_seconds": 1.5}, progress_callback=on_progress
        )
        assert not first.is_error, text_of(first)
        data = first.structured_content
        assert data is not None
        assert data["done"] is False
        assert data["status"] in ("submitted", "processing")
        assert data["waited_seconds"] >= 1.4
        assert data["next_call"] == f'wait_for_task(task_id="{task_id}")'
        assert "not an error" in text_of(first)
        assert seen, "no progress notification arrived"
        values = [p for p, _, _ in seen]
        assert values == sorted(values) and len(set(values)) == len(values)
        assert all(total == 1.5 for _, total, _ in seen)
        assert all(message and task_id in message for _, _, message in seen)

        seen.clear()
        second = await client.call_tool(
            "wait_for_task", {"task_id": task_id, "timeout_seconds": 30}, progress_callback=on_progress
        )
        assert not second.is_error
        assert second.structured_content is not None
        assert second.structured_content["done"] is True
        assert second.structured_content["status"] == "succeeded"
        # Heartbeats at least every 5 s while waiting (the task needed ~4.5 s more).
        assert len(seen) >= 2


@sim_with(duration=1.8)
async def test_two_concurrent_waits_share_one_poll_loop(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    # A fixed 0.3 s interval: one loop polls at most duration/interval + 1 times (sleeps only
    # make it fewer); two independent loops would poll about twice that.
    settings = make_settings(simulator.base_url, poll_initial_seconds=0.3, poll_max_seconds=0.3)
    async with Client(build_server(settings)) as client:
        created = await create(client, prompt="Shared waiting")
        task_id = created["task_id"]
        results: list[Any] = []

        async def wait() -> None:
            results.append(
                await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 20})
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            tg.start_soon(wait)
        assert len(results) == 2
        for result in results:
            assert not result.is_error
            assert result.structured_content["status"] == "succeeded"
        polls = simulator.sim.counters.queries_by_id[task_id]
        assert 1 <= polls <= 1.8 / 0.3 + 1
        # Both answers point at the same saved file, downloaded once.
        paths = {r.structured_content["images"][0]["path"] for r in results}
        assert len(paths) == 1
        assert simulator.sim.counters.downloads == 1


@sim_with(duration=30)
async def test_cancelled_wait_stops_polling(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, poll_initial_seconds=0.1, poll_max_seconds=0.1)
    async with Client(build_server(settings)) as client:
        created = await create(client, prompt="Never mind")
        task_id = created["task_id"]
        with anyio.move_on_after(0.8):
            await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 30})
        await anyio.sleep(0.5)  # let the cancelled loop notice
        settled = simulator.sim.counters.queries_by_id[task_id]
        await anyio.sleep(1.0)  # ten poll intervals
        assert simulator.sim.counters.queries_by_id[task_id] == settled
        # The server is still fine.
        got = await client.call_tool("get_task", {"task_id": task_id})
        assert not got.is_error


async def test_repeated_external_task_id_makes_one_task(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        first = await create(client, prompt="Only once", external_task_id="my-job-42")
        second = await create(client, prompt="Only once", external_task_id="my-job-42")
        assert first["task_id"] == second["task_id"]
        assert second["external_task_id"] == "my-job-42"
        assert any("no second charge" in note for note in second["notes"])
        assert simulator.sim.counters.creates == 1
        assert simulator.sim.counters.creates_by_external_id["my-job-42"] == 1


async def test_element_id_above_2_pow_53_arrives_exact(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    big = 829836802793406551
    assert big > 2**53 and float(big) != big
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        created = await create(
            client, prompt="Merge into <<<element_1>>> and <<<element_2>>>", element_ids=[big, str(big + 2)]
        )
        record = simulator.sim.tasks[created["task_id"]]
        assert record.element_ids == (big, big + 2)


async def test_failed_task_is_a_tool_error_with_the_reason(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    simulator.sim.faults.fail_next_tasks(1, message="Prompt refused by content safety policy")
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        created = await create(client, prompt="Something refused")
        result = await client.call_tool(
            "wait_for_task", {"task_id": created["task_id"], "timeout_seconds": 20}
        )
        assert result.is_error
        message = text_of(result)
        assert "failed" in message and "content safety policy" in message
        assert "Rephrase" in message


@sim_with(image_scale=1.0)  # full-size 1k results: previews must really shrink
async def test_previews_stay_within_budget(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        sizes = {}
        for n in (1, 4, 9):
            result = await client.call_tool(
                "create_image", {"prompt": f"{n} kites", "n": n, "wait_seconds": 30}
            )
            assert not result.is_error, text_of(result)
            total = len(result.model_dump_json(by_alias=True))
            assert total < 100_000
            previews = [b for b in result.content if b.type == "image"]
            assert 1 <= len(previews) <= n
            for block in previews:
                with Image.open(__import__("io").BytesIO(base64.b64decode(block.data))) as img:
                    assert max(img.size) <= 512
            sizes[n] = total
        assert len([b for b in result.content if b.type == "resource_link"]) == 9

    async with Client(build_server(make_settings(simulator.base_url, preview_size=0))) as client:
        result = await client.call_tool("create_image", {"prompt": "no previews", "wait_seconds": 30})
        assert not result.is_error
        assert not [b for b in result.content if b.type == "image"]


async def test_tools_list_is_tight_and_annotated(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        listing = await client.list_tools()
        names = {t.name for t in listing.tools}
        assert names == {"create_image", "get_task", "wait_for_task", "list_tasks", "get_account"}
        size = len(listing.model_dump_json(by_alias=True, exclude_none=True))
        assert size < 10_000, size  # issues 4 and 14: under 10,000 with every tool
        for tool in listing.tools:
            assert tool.annotations is not None
            assert tool.output_schema is not None
            assert tool.description
        by_name = {t.name: t for t in listing.tools}
        assert by_name["get_task"].annotations.read_only_hint is True
        assert by_name["create_image"].annotations.read_only_hint is False
        assert "units" in by_name["create_image"].description
        assert "wait_for_task" in by_name["create_image"].description


async def test_missing_credentials_start_and_explain(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(api_key=None)
    async with Client(build_server(settings)) as client:
        listing = await client.list_tools()
        assert len(listing.tools) == 5
        for tool, args in (("create_image", {"prompt": "anything"}), ("get_account", {})):
            result = await client.call_tool(tool, args)
            assert result.is_error
            message = text_of(result)
            assert "KLING_API_KEY" in message and "--simulate" in message
