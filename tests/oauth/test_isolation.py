"""Per-user isolation with OAuth sign-in against the real authorization server (oidc-provider): two
subjects on one vendor account, each sees only their own tasks; a static token is a third caller."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kling_omni_mcp.config import Settings
from tests.conftest import SimHandle, text_of
from tests.oauth.conftest import SCOPE, AuthServer
from tests.oauth.test_resource_server import client_for, mcp_server

pytestmark = pytest.mark.anyio

STATIC_TOKEN = "static-tok-isolation-4e1a9c"


async def test_two_oauth_subjects_see_only_their_own_tasks(
    auth_server: AuthServer, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    issued = auth_server.token()  # client-credentials grant: subject "kling-ci"
    other = auth_server.mint({"sub": "someone-else", "scope": SCOPE})  # signed by the provider's key
    async with mcp_server(auth_server, simulator, make_settings, mcp_auth_tokens=STATIC_TOKEN) as url:
        async with client_for(url, issued) as first:
            created = await first.call_tool("create_image", {"prompt": "Mine", "wait_seconds": 20})
            assert not created.is_error, text_of(created)
            assert created.structured_content is not None
            task_id = created.structured_content["task_id"]
            assert not (await first.call_tool("get_task", {"task_id": task_id})).is_error
            listed = await first.call_tool("list_tasks", {})
            assert listed.structured_content is not None
            assert [row["task_id"] for row in listed.structured_content["tasks"]] == [task_id]

        for token in (other, STATIC_TOKEN):
            async with client_for(url, token) as stranger:
                got = await stranger.call_tool("get_task", {"task_id": task_id})
                assert got.is_error and f"No task {task_id!r} was found" in text_of(got)
                listed = await stranger.call_tool("list_tasks", {})
                assert listed.structured_content is not None
                assert listed.structured_content["tasks"] == []
