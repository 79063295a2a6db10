"""A remote client over real loopback HTTP (issue 11, "Done when"): it gets links, never server
paths; downloads its image with a plain HTTP client; feeds it back as ``kling://`` into a second
create; and a second signed-in user can neither see nor use the first one's task."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from kling_omni_mcp._asgi import serve_asgi
from kling_omni_mcp.config import Settings
from kling_omni_mcp.media.outputs import ResultStore
from kling_omni_mcp.server.http import build_http_app
from tests.conftest import SimHandle, free_port, sim_with, text_of, write_png

pytestmark = pytest.mark.anyio

ALICE, BOB = "alice-token-5d8e1f0a9c", "bob-token-2b7c4e6d1a"


@asynccontextmanager
async def signed_in(url: str, token: str) -> AsyncIterator[Client]:
    """An MCP client over HTTP holding ``token``."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=60)
    )
    async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
        yield client


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert isinstance(data, dict)
    return data


def whole_answer(result: Any) -> str:
    return json.dumps(result.model_dump(mode="json", by_alias=True))


@sim_with(image_scale=0.5)  # 512 px results: large enough to be a reference (300 px at least)
async def test_remote_client_gets_links_chains_results_and_users_are_kept_apart(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[ALICE, BOB], public_url=public)
    store = ResultStore(settings.output_dir)
    async with serve_asgi(build_http_app(settings), port=port) as url:
        async with signed_in(url, ALICE) as alice:
            created = await alice.call_tool("create_image", {"prompt": "A red fox", "wait_seconds": 20})
            first = structured(created)
            task_id = first["task_id"]
            assert first["status"] == "succeeded"
            saved = store.saved_image(task_id, 0)
            assert saved is not None
            # Links, not paths: no server path anywhere in the answer.
            assert str(settings.output_dir) not in whole_answer(created)
            image = first["images"][0]
            assert image["path"] is None and image["link"].startswith(f"{public}/files/{task_id}/0?")
            [resource_link] = [b for b in created.content if b.type == "resource_link"]
            assert str(resource_link.uri) == image["link"]
            assert resource_link.description == f"kling://tasks/{task_id}/images/0"

            # A plain HTTP client, no bearer token: the saved file's exact bytes.
            async with httpx2.AsyncClient(timeout=20) as plain:
                got = await plain.get(image["link"])
            assert got.status_code == 200
            assert got.content == saved.read_bytes()
            assert got.headers["content-type"] == "image/png"

            listed = await alice.call_tool("list_tasks", {})
            [row] = structured(listed)["tasks"]
            assert row["task_id"] == task_id and row["paths"] == [] and len(row["links"]) == 1
            assert row["links"][0].startswith(f"{public}/files/{task_id}/0?")
            assert str(settings.output_dir) not in whole_answer(listed)

            # The earlier result as the reference of a second create: read from disk, sent to the vendor.
            reference = f"kling://tasks/{task_id}/images/0"
            bluer = structured(
                await alice.call_tool(
                    "create_image", {"prompt": "<<<image_1>>> but bluer", "images": [reference]}
                )
            )
            body = simulator.sim.tasks[bluer["task_id"]].body
            assert len(body["image_list"]) == 1
            sent = base64.b64decode(body["image_list"][0]["image"])
            assert sent == saved.read_bytes()

            snapshot = structured(await alice.call_tool("task_snapshot", {"task_id": task_id}))
            assert "path" not in snapshot["images"][0]  # the studio view over HTTP: no server path either
            mine = await alice.read_resource(reference)
            assert base64.b64decode(mine.contents[0].blob) == saved.read_bytes()  # type: ignore[union-attr]

        tasks_before = simulator.sim.task_count
        async with signed_in(url, BOB) as bob:
            # Bob's answers for Alice's task are word for word those for a task that does not exist.
            for tool, args in [("get_task", {}), ("wait_for_task", {"timeout_seconds": 1})]:
                theirs = await bob.call_tool(tool, {"task_id": task_id, **args})
                unknown = await bob.call_tool(tool, {"task_id": "no-such-task-42", **args})
                assert theirs.is_error and unknown.is_error, tool
                assert text_of(theirs).replace(task_id, "ID") == text_of(unknown).replace(
                    "no-such-task-42", "ID"
                )
                assert "fox" not in text_of(theirs) and "/files/" not in text_of(theirs)
            assert structured(await bob.call_tool("list_tasks", {}))["tasks"] == []
            for uri in (reference, f"kling://tasks/{task_id}/thumbnails/0"):
                with pytest.raises(MCPError) as refused:
                    await bob.read_resource(uri)
                assert f"No task {task_id!r} was found" in str(refused.value), uri
            snap = await bob.call_tool("task_snapshot", {"task_id": task_id})
            assert snap.is_error and f"No task {task_id!r} was found" in text_of(snap)
            used = await bob.call_tool(
                "create_image", {"prompt": "steal <<<image_1>>>", "images": [reference]}
            )
            assert used.is_error and "images[0]" in text_of(used)
            # Local paths over HTTP (KLING_INPUT_DIRS set here, so allowed): covered in the next test.
            assert simulator.sim.task_count == tasks_before  # nothing was created for Bob


@pytest.mark.parametrize("shared", [False, True], ids=["isolated", "shared"])
async def test_shared_tasks_setting_lets_every_user_see_every_task(
    simulator: SimHandle, make_settings: Callable[..., Settings], shared: bool
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[ALICE, BOB], shared_tasks=shared)
    async with serve_asgi(build_http_app(settings)) as url:
        async with signed_in(url, ALICE) as alice:
            task_id = structured(
                await alice.call_tool("create_image", {"prompt": "A fox", "wait_seconds": 20})
            )["task_id"]
        async with signed_in(url, BOB) as bob:
            got = await bob.call_tool("get_task", {"task_id": task_id})
            assert got.is_error is (not shared)
            rows = structured(await bob.call_tool("list_tasks", {}))["tasks"]
            assert [r["task_id"] for r in rows] == ([task_id] if shared else [])


@sim_with(image_scale=0.5)
async def test_without_public_url_answers_give_kling_uris_and_local_paths_are_refused(
    simulator: SimHandle, make_settings: Callable[..., Settings], workdir: Any
) -> None:
    photo = write_png(workdir / "photo.png")
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[ALICE], input_dirs=None)
    async with serve_asgi(build_http_app(settings)) as url, signed_in(url, ALICE) as alice:
        created = await alice.call_tool("create_image", {"prompt": "A fox", "wait_seconds": 20})
        data = structured(created)
        uri = f"kling://tasks/{data['task_id']}/images/0"
        assert data["images"][0]["path"] is None and data["images"][0]["link"] == uri
        assert [str(b.uri) for b in created.content if b.type == "resource_link"] == [uri]
        assert "KLING_PUBLIC_URL" in text_of(created)
        assert str(settings.output_dir) not in whole_answer(created)

        before = simulator.sim.task_count
        for path in [str(photo), "~/photo.png", "photo.png"]:
            refused = await alice.call_tool("create_image", {"prompt": "A fox", "images": [path]})
            assert refused.is_error, path
            text = text_of(refused)
            assert "images[0]" in text and "https URL" in text and "kling://" in text, text
        assert simulator.sim.task_count == before
        # The earlier result still works as an input without any input folder.
        chained = await alice.call_tool("create_image", {"prompt": "bluer", "images": [uri]})
        assert not chained.is_error, text_of(chained)


async def test_local_paths_over_http_are_read_when_input_dirs_are_set(
    simulator: SimHandle, make_settings: Callable[..., Settings], workdir: Any
) -> None:
    photo = write_png(workdir / "photo.png")
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[ALICE])  # KLING_INPUT_DIRS set
    async with serve_asgi(build_http_app(settings)) as url, signed_in(url, ALICE) as alice:
        created = await alice.call_tool("create_image", {"prompt": "A fox", "images": [str(photo)]})
        assert not created.is_error, text_of(created)


async def test_a_refused_earlier_result_is_named_by_its_reference_not_its_server_path(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[ALICE])
    async with serve_asgi(build_http_app(settings)) as url, signed_in(url, ALICE) as alice:
        task_id = structured(await alice.call_tool("create_image", {"prompt": "A fox", "wait_seconds": 20}))[
            "task_id"
        ]
        cases = {
            f"kling://tasks/{task_id}/images/0": "300 px",  # the simulator's 256 px result is too small
            f"kling://tasks/{task_id}/images/5": "no saved image 5",
            "kling://tasks/never-made/images/0": "no saved image 0",
            f"kling://tasks/{task_id}/thumbs/0": "not a saved-image reference",
        }
        for reference, reason in cases.items():
            refused = await alice.call_tool(
                "create_image", {"prompt": "again", "images": ["https://example.com/a.png", reference]}
            )
            text = text_of(refused)
            assert refused.is_error and "images[1]" in text and reason in text, text
            assert str(settings.output_dir) not in text


async def test_owners_survive_a_restart_and_external_ids_resolve_to_their_owner(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, mcp_auth_tokens=[ALICE, BOB])
    async with serve_asgi(build_http_app(settings)) as url, signed_in(url, ALICE) as alice:
        created = await alice.call_tool(
            "create_image", {"prompt": "A fox", "external_task_id": "alice-fox-1", "wait_seconds": 20}
        )
        task_id = structured(created)["task_id"]
    # A new process: no owner in memory, only the sidecar on disk.
    async with serve_asgi(build_http_app(settings)) as url:
        async with signed_in(url, ALICE) as alice:
            for key in (task_id, "alice-fox-1"):
                assert structured(await alice.call_tool("get_task", {"task_id": key}))["task_id"] == task_id
        async with signed_in(url, BOB) as bob:
            for key in ("alice-fox-1", task_id):
                got = await bob.call_tool("get_task", {"task_id": key})
                assert got.is_error and f"No task {key!r} was found" in text_of(got), key
            again = await bob.call_tool("create_image", {"prompt": "mine", "external_task_id": "alice-fox-1"})
            assert again.is_error and "external_task_id" in text_of(again)
            assert task_id not in text_of(again)
