"""POST /callbacks/kling against a hostile sender, over real loopback HTTP with the simulator.

Every figure is counted where it matters: vendor queries at the simulator.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
import pytest

from kling_omni_mcp.config import Settings, SettingsError, load_settings
from tests.conftest import SimHandle, command, free_port, sim_with
from tests.reliability.helpers import record_result
from tests.server.test_http import WEBHOOK_SECRET, client_for, http_server, signed

pytestmark = pytest.mark.anyio

ACCEPTED = b'{"ok":true}'


def legacy(task_id: str, status: str = "succeed") -> bytes:
    return json.dumps({"task_id": task_id, "task_status": status}).encode()


async def test_route_is_404_without_public_url(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, webhook_secret=WEBHOOK_SECRET)
    async with http_server(settings) as url, httpx2.AsyncClient(timeout=10) as raw:
        body = legacy("1")
        response = await raw.post(f"{url}/callbacks/kling", content=body, headers=signed(body))
        assert response.status_code == 404


async def test_host_check_applies_and_public_host_is_allowed(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        simulator.base_url, webhook_secret=WEBHOOK_SECRET, public_url="https://public.example"
    )
    async with http_server(settings) as url, httpx2.AsyncClient(timeout=10) as raw:
        body = legacy("1")
        evil = await raw.post(
            f"{url}/callbacks/kling", content=body, headers={**signed(body), "Host": "evil.example"}
        )
        assert evil.status_code == 421
        origin = await raw.post(
            f"{url}/callbacks/kling",
            content=body,
            headers={**signed(body, msg_id="m2"), "Origin": "http://evil.example"},
        )
        assert origin.status_code == 403
        public = await raw.post(
            f"{url}/callbacks/kling",
            content=body,
            headers={**signed(body, msg_id="m3"), "Host": "public.example"},
        )
        assert public.status_code == 200
        # The public host is allowed on /mcp too (the load balancer sends it).
        init = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        mcp_headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
        allowed = await raw.post(f"{url}/mcp", json=init, headers={**mcp_headers, "Host": "public.example"})
        assert allowed.status_code not in (403, 421)


def _only_callbacks_wake(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> tuple[int, Settings]:
    """A port and settings for a signed callback route with polling 60 s apart (only callbacks wake)."""
    port = free_port()
    settings = make_settings(
        simulator.base_url,
        poll_initial_seconds=60,
        poll_max_seconds=60,
        webhook_secret=WEBHOOK_SECRET,
        public_url=f"http://127.0.0.1:{port}",
    )
    return port, settings


@sim_with(duration=60.0)
async def test_replays_and_floods_cause_bounded_vendor_queries(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port, settings = _only_callbacks_wake(simulator, make_settings)
    async with http_server(settings, port=port) as url, client_for(url, None) as client:
        created = await client.call_tool("create_image", {"prompt": "Hammer me"})
        task_id = created.structured_content["task_id"]  # type: ignore[index]
        async with anyio.create_task_group() as tg, httpx2.AsyncClient(timeout=10) as raw:
            tg.start_soon(client.call_tool, "wait_for_task", {"task_id": task_id, "timeout_seconds": 8})
            await anyio.sleep(0.5)  # first poll done; the next is 60 s away
            base = simulator.sim.counters.queries_by_id[task_id]
            body = legacy(task_id, "processing")
            headers = signed(body, msg_id="msg_replayed")
            first = await raw.post(f"{url}/callbacks/kling", content=body, headers=headers)
            assert first.status_code == 200
            await anyio.sleep(1.2)
            after_first = simulator.sim.counters.queries_by_id[task_id]
            assert after_first == base + 1  # the first delivery woke the watcher at once
            for _ in range(20):  # the same delivery again and again
                again = await raw.post(f"{url}/callbacks/kling", content=body, headers=headers)
                assert (again.status_code, again.content) == (200, ACCEPTED)
            await anyio.sleep(1.2)
            replay_queries = simulator.sim.counters.queries_by_id[task_id] - after_first
            assert replay_queries == 0

            # A flood of distinct, validly signed deliveries: at most one query per second.
            started = time.monotonic()
            before_flood = simulator.sim.counters.queries_by_id[task_id]
            sent = 0
            while time.monotonic() - started < 3.0:
                response = await raw.post(
                    f"{url}/callbacks/kling", content=body, headers=signed(body, msg_id=f"flood_{sent}")
                )
                assert response.status_code == 200
                sent += 1
            await anyio.sleep(1.2)  # a deferred wake-up lands
            flood_seconds = time.monotonic() - started
            flood_queries = simulator.sim.counters.queries_by_id[task_id] - before_flood
            assert sent > 20
            assert flood_queries <= int(flood_seconds) + 1, (flood_queries, flood_seconds)
            tg.cancel_scope.cancel()
    record_result(
        "callback_replay",
        {
            "replayed_deliveries": 20,
            "vendor_queries_from_replays": replay_queries,
            "flood_callbacks": sent,
            "flood_seconds": round(flood_seconds, 1),
            "vendor_queries_from_flood": flood_queries,
        },
    )


@sim_with(duration=60.0)
async def test_known_and_unknown_tasks_get_identical_answers_and_new_format_is_accepted(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    port, settings = _only_callbacks_wake(simulator, make_settings)
    async with http_server(settings, port=port) as url, client_for(url, None) as client:
        created = await client.call_tool("create_image", {"prompt": "New format"})
        task_id = created.structured_content["task_id"]  # type: ignore[index]
        async with anyio.create_task_group() as tg, httpx2.AsyncClient(timeout=10) as raw:
            tg.start_soon(client.call_tool, "wait_for_task", {"task_id": task_id, "timeout_seconds": 6})
            await anyio.sleep(0.5)
            base = simulator.sim.counters.queries_by_id[task_id]
            # The console's "Send test callback" body, for a task nobody watches.
            test_body = json.dumps(
                {"id": "test-callback", "status": "submitted", "message": "", "outputs": [], "billing": []}
            ).encode()
            test = await raw.post(f"{url}/callbacks/kling", content=test_body, headers=signed(test_body))
            new = json.dumps({"id": task_id, "status": "succeeded", "outputs": []}).encode()
            known = await raw.post(f"{url}/callbacks/kling", content=new, headers=signed(new, msg_id="m2"))
            unknown_body = legacy("9999999999999999999")
            unknown = await raw.post(
                f"{url}/callbacks/kling", content=unknown_body, headers=signed(unknown_body, msg_id="m3")
            )
            answers = {(r.status_code, r.content, r.headers["content-type"]) for r in (test, known, unknown)}
            assert answers == {(200, ACCEPTED, "application/json")}
            await anyio.sleep(0.5)
            assert simulator.sim.counters.queries_by_id[task_id] == base + 1  # the new format woke it
            tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("secret", "expected"),
    [
        ("whsec_" + base64.b64encode(b"short-16-bytes!!").decode(), "at least 24"),
        ("whsec_not base64 at all!", "not a Standard Webhooks secret"),
        ("plain-password", "not a Standard Webhooks secret"),
    ],
)
def test_bad_webhook_secret_refused_at_start(secret: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected) as caught:
        load_settings(webhook_secret=secret)
    assert secret not in str(caught.value)


def test_good_webhook_secrets_accepted() -> None:
    raw = base64.b64encode(b"k" * 24).decode()
    for secret in (f"whsec_{raw}", raw, f"whsec_{raw.rstrip('=')}"):
        assert load_settings(webhook_secret=secret).webhook_secret is not None


def test_cli_exits_2_on_bad_webhook_secret(tmp_path: Any) -> None:
    secret = "whsec_" + base64.b64encode(b"too-short").decode()
    proc = subprocess.run(
        [*command(), "--simulate", "--transport", "http", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "KLING_WEBHOOK_SECRET": secret},
        check=False,
    )
    assert proc.returncode == 2
    assert "KLING_WEBHOOK_SECRET" in proc.stderr and "at least 24" in proc.stderr
    assert "Traceback" not in proc.stderr and secret not in proc.stderr
