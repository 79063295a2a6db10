"""Vendor faults injected through the simulator, each checked through the MCP tools as an agent
sees them: what is retried succeeds within its budget, what is not says why, and nothing is
charged twice or left half-written on disk."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from PIL import Image

from kling_omni_mcp.budget import utc_day
from kling_omni_mcp.config import Settings
from kling_omni_mcp.kling import auth as kling_auth
from kling_omni_mcp.ledger import LEDGER_FILE, FileLedger
from tests.conftest import SimHandle, free_port, serve_sim, sim_with, text_of
from tests.reliability.helpers import leftovers, mcp_session

pytestmark = pytest.mark.anyio


async def create_task(client: Client, **args: Any) -> dict[str, Any]:
    result = await client.call_tool("create_image", {"prompt": "A lighthouse at dawn", **args})
    assert not result.is_error, text_of(result)
    data: dict[str, Any] | None = result.structured_content
    assert data is not None
    return data


# --- retryable faults on reads ------------------------------------------------------------------

# Bursts of every class the vendor documents as "retry with backoff": (status, code) in order.
BURSTS = {
    "5xx": [(500, 5000), (503, 5001), (504, 5002)],
    "1302-rate-limit": [(429, 1302), (429, 1302)],
    "1303-concurrency": [(429, 1303), (429, 1303)],
}


@pytest.mark.parametrize("burst", list(BURSTS))
async def test_read_burst_is_retried_and_get_task_succeeds(
    burst: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    async with mcp_session(make_settings(simulator.base_url)) as client:
        task_id = (await create_task(client))["task_id"]
        for status, code in BURSTS[burst]:
            sim.faults.fail_next(1, http_status=status, code=code, message="burst", kind="query")
        started = time.monotonic()
        result = await client.call_tool("get_task", {"task_id": task_id})
        elapsed = time.monotonic() - started
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        assert result.structured_content["task_id"] == task_id
        # Every refused attempt retried, then the answer: not given up on, not hammered.
        refused = len(BURSTS[burst])
        assert sim.counters.faults_served == refused
        assert sim.counters.queries_by_id[task_id] == refused + 1
        # 1303 asks for pauses of >= 1 s; the client's own deadline is 60 s.
        if burst.startswith("1303"):
            assert elapsed >= 2.0
        assert elapsed < 30


async def test_list_burst_is_retried(simulator: SimHandle, make_settings: Callable[..., Settings]) -> None:
    sim = simulator.sim
    async with mcp_session(make_settings(simulator.base_url)) as client:
        task_id = (await create_task(client))["task_id"]
        sim.faults.fail_next(1, http_status=503, code=5001, kind="list")
        sim.faults.fail_next(1, http_status=429, code=1302, kind="list")
        result = await client.call_tool("list_tasks", {})
        assert not result.is_error, text_of(result)
        assert result.structured_content is not None
        assert [t["task_id"] for t in result.structured_content["tasks"]] == [task_id]
        assert sim.counters.lists == 3


@sim_with(duration=0.3)
async def test_wait_rides_out_a_burst_while_polling(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    settings = make_settings(simulator.base_url, poll_initial_seconds=0.2, poll_max_seconds=0.2)
    async with mcp_session(settings) as client:
        task_id = (await create_task(client))["task_id"]
        sim.faults.fail_next(2, http_status=503, code=5001, kind="query")
        started = time.monotonic()
        result = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 30})
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert data is not None
        assert data["status"] == "succeeded" and data["done"] is True
        assert Path(data["images"][0]["path"]).is_file()
        assert sim.counters.faults_served == 2
        assert time.monotonic() - started < 30


@pytest.mark.slow
async def test_a_burst_longer_than_the_retry_budget_is_a_clear_error(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    async with mcp_session(make_settings(simulator.base_url)) as client:
        task_id = (await create_task(client))["task_id"]
        sim.faults.fail_next(
            50, http_status=503, code=5001, message="Service under maintenance", kind="query"
        )
        result = await client.call_tool("get_task", {"task_id": task_id})
        assert result.is_error
        message = text_of(result)
        assert "5001" in message and "maintenance" in message.lower()
        assert "try again" in message.lower()
        assert sim.counters.queries_by_id[task_id] == 5  # the client's max_attempts, no more
        sim.faults.clear()
        again = await client.call_tool("get_task", {"task_id": task_id})
        assert not again.is_error, text_of(again)


# --- non-retryable vendor codes -----------------------------------------------------------------

# (HTTP status, code, words the tool error must contain): the vendor's table, with our hint.
NON_RETRYABLE: list[tuple[int, int, list[str]]] = [
    (401, 1000, ["1000", "KLING_API_KEY"]),
    (401, 1001, ["1001", "empty"]),
    (401, 1002, ["1002", "credentials were refused"]),
    (401, 1003, ["1003", "clock"]),
    (401, 1004, ["1004", "expired", "clock"]),
    (429, 1100, ["1100", "abnormal", "Kling console"]),
    (429, 1101, ["1101", "arrears", "top it up"]),
    (429, 1102, ["1102", "resource pack", "renew"]),
    (403, 1103, ["1103", "permission"]),
    (400, 1200, ["1200", "parameters"]),
    (400, 1201, ["1201"]),
    (400, 1300, ["1300", "policy"]),
    (400, 1301, ["1301", "content policy", "rephrase"]),
    (429, 1304, ["1304", "whitelist"]),
]


async def test_non_retryable_codes_on_create_are_clear_and_sent_once(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    settings = make_settings(simulator.base_url)
    async with mcp_session(settings) as client:
        for status, code, words in NON_RETRYABLE:
            sim.counters.reset()
            vendor_message = f"simulated refusal {code}"
            sim.faults.fail_next(1, http_status=status, code=code, message=vendor_message, kind="create")
            result = await client.call_tool("create_image", {"prompt": "A red kite"})
            assert result.is_error, code
            message = text_of(result)
            for word in [*words, vendor_message]:  # our hint and the vendor's own words
                assert word.lower() in message.lower(), (code, message)
            assert "unexpectedly" not in message, (code, message)
            # Sent once, never re-sent: nothing was created, charged or saved.
            assert (sim.counters.create_requests, sim.counters.creates) == (1, 0), code
        # Only the spending ledger (created empty-handed: every booking was released) is there.
        assert [p.name for p in settings.output_dir.rglob("*")] in ([], [LEDGER_FILE, LEDGER_FILE + ".lock"])
        assert FileLedger(settings.output_dir).spent(utc_day(datetime.now(UTC))) == 0
        # The server is still fine: a normal call answers.
        assert not (await client.call_tool("create_image", {"prompt": "A red kite"})).is_error


async def test_non_retryable_codes_on_reads_are_clear_and_not_retried(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    async with mcp_session(make_settings(simulator.base_url)) as client:
        task_id = (await create_task(client))["task_id"]
        calls = [
            ("get_task", {"task_id": task_id}, "query"),
            ("wait_for_task", {"task_id": task_id, "timeout_seconds": 10}, "query"),
            ("list_tasks", {}, "list"),
        ]
        for status, code, words in NON_RETRYABLE:
            for tool, args, kind in calls:
                sim.counters.reset()
                vendor_message = f"simulated refusal {code}"
                sim.faults.fail_next(1, http_status=status, code=code, message=vendor_message, kind=kind)
                result = await client.call_tool(tool, args)
                assert result.is_error, (tool, code)
                message = text_of(result)
                for word in [*words, vendor_message]:
                    assert word.lower() in message.lower(), (tool, code, message)
                assert sim.counters.queries + sim.counters.lists == 1, (tool, code)  # not retried
        assert not (await client.call_tool("get_task", {"task_id": task_id})).is_error


@sim_with(api_keys=("the-right-key-12345",))
async def test_a_wrong_api_key_is_1002_on_every_tool(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    calls: list[tuple[str, dict[str, Any]]] = [
        ("create_image", {"prompt": "A red kite"}),
        ("get_task", {"task_id": "123"}),
        ("wait_for_task", {"task_id": "123", "timeout_seconds": 5}),
        ("list_tasks", {}),
    ]
    async with mcp_session(make_settings(simulator.base_url, api_key="a-wrong-key-67890")) as client:
        for tool, args in calls:
            result = await client.call_tool(tool, args)
            assert result.is_error, tool
            message = text_of(result)
            assert "1002" in message and "credentials were refused" in message, (tool, message)
            assert "a-wrong-key-67890" not in message
    assert sim.counters.creates == 0
    assert sim.counters.create_requests == 1  # an API key cannot be re-signed: sent once


ACCESS_KEY, SECRET_KEY = "ak-reliability-0001", "sk-reliability-secret-0001"


@sim_with(api_keys=(), access_keys={ACCESS_KEY: SECRET_KEY})
@pytest.mark.parametrize(
    ("skew", "code", "words"),
    [(-7200.0, 1004, ["expired", "clock"]), (3600.0, 1003, ["not valid yet", "clock"]), (0.0, 1002, [])],
    ids=["clock-behind-1004", "clock-ahead-1003", "wrong-secret-1002"],
)
async def test_jwt_failures_name_the_cause(
    skew: float,
    code: int,
    words: list[str],
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A skewed machine clock (the only thing faked) or a wrong secret: a tool error that says so."""
    sim = simulator.sim
    secret = SECRET_KEY if skew else "sk-not-the-right-secret"

    monkeypatch.setattr(kling_auth, "wall_clock", lambda: time.time() + skew)
    settings = make_settings(simulator.base_url, api_key=None, access_key=ACCESS_KEY, secret_key=secret)
    async with mcp_session(settings) as client:
        result = await client.call_tool("create_image", {"prompt": "A red kite"})
    assert result.is_error
    message = text_of(result)
    assert str(code) in message
    for word in words:
        assert word in message, message
    assert sim.counters.creates == 0
    # 1004 earns exactly one freshly signed retry; the others are sent once.
    assert sim.counters.create_requests == (2 if code == 1004 else 1)


# --- creates whose answer is lost ---------------------------------------------------------------


@sim_with(duration=0.3)
async def test_lost_create_answer_gives_the_caller_the_one_task(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    sim.faults.lose_next_create()
    async with mcp_session(make_settings(simulator.base_url)) as client:
        created = await create_task(client)
        assert list(sim.tasks) == [created["task_id"]]
        assert sim.counters.creates == 1 and sim.counters.create_requests == 1
        waited = await client.call_tool(
            "wait_for_task", {"task_id": created["task_id"], "timeout_seconds": 20}
        )
        assert not waited.is_error, text_of(waited)
        assert waited.structured_content is not None
        assert waited.structured_content["status"] == "succeeded"


async def test_lost_create_and_a_failed_lookup_still_make_one_task(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    sim.faults.lose_next_create()
    sim.faults.fail_next(1, http_status=503, code=5001, kind="query")  # the lookup after the loss
    async with mcp_session(make_settings(simulator.base_url)) as client:
        created = await create_task(client)
    assert list(sim.tasks) == [created["task_id"]]
    # Re-sent once (the vendor refused the duplicate id), still one task, one charge.
    assert sim.counters.creates_by_external_id[created["external_task_id"]] == 2
    assert sim.counters.creates == 1


async def test_create_refused_with_5xx_is_resent_and_makes_one_task(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    sim.faults.fail_next(2, http_status=500, code=5000, message="Internal error", kind="create")
    async with mcp_session(make_settings(simulator.base_url)) as client:
        created = await create_task(client)
    assert list(sim.tasks) == [created["task_id"]]
    assert sim.counters.create_requests == 3 and sim.counters.creates == 1


# --- downloads that go wrong --------------------------------------------------------------------


@sim_with(duration=0.3)
@pytest.mark.parametrize("fault", ["cut", "html"])
async def test_broken_download_leaves_nothing_and_get_task_completes_it(
    fault: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    settings = make_settings(simulator.base_url)
    async with mcp_session(settings) as client:
        if fault == "cut":
            sim.faults.cut_next_downloads(1)
        else:
            sim.faults.html_next_downloads(1)
        first = await client.call_tool("create_image", {"prompt": "Three kites", "n": 3, "wait_seconds": 20})
        assert not first.is_error, text_of(first)
        data = first.structured_content
        assert data is not None and data["status"] == "succeeded"
        task_id = data["task_id"]
        missing = [img["index"] for img in data["images"] if img["path"] is None]
        assert len(missing) == 1  # exactly the broken one; the other two were saved
        assert any("could not be saved" in note and "get_task" in note for note in data["notes"])
        folder = settings.output_dir / task_id
        assert leftovers(settings.output_dir) == []
        names = sorted(p.name for p in folder.iterdir())
        assert len(names) == 3 and f"{task_id}.json" in names  # two images + sidecar, no partial file
        for name in names:
            if name.endswith(".png"):
                with Image.open(folder / name) as img:
                    img.verify()
        sidecar = json.loads((folder / f"{task_id}.json").read_text())
        assert [img["path"] is None for img in sidecar["images"]].count(True) == 1

        second = await client.call_tool("get_task", {"task_id": task_id})
        assert not second.is_error, text_of(second)
        again = second.structured_content
        assert again is not None
        paths = [Path(img["path"]) for img in again["images"]]
        assert len(paths) == 3 and all(p.is_file() for p in paths)
        for path in paths:
            with Image.open(path) as img:
                img.verify()
        # Only the broken image was fetched again.
        assert sim.counters.downloads == 4
        assert leftovers(settings.output_dir) == []
        sidecar = json.loads((folder / f"{task_id}.json").read_text())
        assert [img["path"] for img in sidecar["images"]] == [str(p) for p in paths]
        assert sidecar["prompt"] == "Three kites"


# --- tasks that fail ----------------------------------------------------------------------------


@sim_with(duration=0.3)
async def test_failed_task_is_a_tool_error_on_every_look(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    reason = "Image refused by the risk control system"
    sim.faults.fail_next_tasks(1, message=reason)
    settings = make_settings(simulator.base_url)
    async with mcp_session(settings) as client:
        waited = await client.call_tool("create_image", {"prompt": "Something refused", "wait_seconds": 20})
        assert waited.is_error
        assert reason in text_of(waited) and "Rephrase" in text_of(waited)
        [task_id] = list(sim.tasks)
        got = await client.call_tool("get_task", {"task_id": task_id})
        assert got.is_error and reason in text_of(got)
        listed = await client.call_tool("list_tasks", {})
        assert listed.structured_content is not None
        assert [(t["task_id"], t["status"]) for t in listed.structured_content["tasks"]] == [
            (task_id, "failed")
        ]
    sidecar = json.loads((settings.output_dir / task_id / f"{task_id}.json").read_text())
    assert sidecar["status"] == "failed" and sidecar["status_message"] == reason
    assert sidecar["prompt"] == "Something refused"
    assert sim.counters.downloads == 0


# --- slow answers and no answers ----------------------------------------------------------------


async def test_slow_reads_past_the_timeout_are_retried(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    async with mcp_session(make_settings(simulator.base_url, http_timeout=0.3)) as client:
        task_id = (await create_task(client))["task_id"]
        sim.faults.delay_next(2, seconds=1.0, kind="query")
        started = time.monotonic()
        result = await client.call_tool("get_task", {"task_id": task_id})
        assert not result.is_error, text_of(result)
        assert sim.counters.queries_by_id[task_id] == 3
        assert time.monotonic() - started < 20


async def test_a_create_answered_too_late_makes_one_task(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    """The first create outlives the timeout (its answer is never read); the resend makes the task,
    and the late first attempt is refused as a duplicate external id: one task, one charge."""
    sim = simulator.sim
    sim.faults.delay_next(1, seconds=1.0, kind="create")
    async with mcp_session(make_settings(simulator.base_url, http_timeout=0.3)) as client:
        created = await create_task(client)
        await anyio.sleep(1.2)  # let the delayed first attempt finish on the vendor's side
    assert list(sim.tasks) == [created["task_id"]]
    assert sim.counters.creates == 1
    assert sim.counters.create_requests == 2


@sim_with(duration=30)
async def test_a_wait_with_no_answer_in_budget_is_a_clear_error_and_can_resume(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    sim = simulator.sim
    settings = make_settings(simulator.base_url, http_timeout=0.3)
    async with mcp_session(settings) as client:
        task_id = (await create_task(client))["task_id"]
        sim.faults.delay_next(50, seconds=0.8, kind="query")
        started = time.monotonic()
        result = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 1})
        elapsed = time.monotonic() - started
        assert result.is_error
        message = text_of(result)
        assert task_id in message and "wait_for_task" in message
        assert "did not answer" in message  # the cause: the vendor is too slow
        assert 0.9 <= elapsed < 10
        sim.faults.clear()
        again = await client.call_tool("get_task", {"task_id": task_id})
        assert not again.is_error, text_of(again)


async def test_unreachable_vendor_ends_a_wait_clearly_and_the_server_recovers(
    make_settings: Callable[..., Settings],
) -> None:
    """The fast version (the full retry budget of a read is in the slow test below)."""
    port = free_port()  # nothing listens here: connection refused
    async with mcp_session(make_settings(f"http://127.0.0.1:{port}")) as client:
        started = time.monotonic()
        waited = await client.call_tool("wait_for_task", {"task_id": "8812345", "timeout_seconds": 1})
        assert waited.is_error
        message = text_of(waited)
        assert "did not answer" in message and "unreachable" in message
        assert 'wait_for_task(task_id="8812345")' in message
        assert time.monotonic() - started < 10
        # The vendor comes back on the same address: the same server answers the next call.
        async with serve_sim(port=port, duration=0.3) as vendor:
            sim = vendor.sim
            created = await client.call_tool("create_image", {"prompt": "Back online", "wait_seconds": 20})
            assert not created.is_error, text_of(created)
            assert created.structured_content is not None
            assert created.structured_content["status"] == "succeeded"
            assert sim.counters.creates == 1


@pytest.mark.slow
async def test_unreachable_vendor_is_a_clear_error_and_the_server_recovers(
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()  # nothing listens here: connection refused
    settings = make_settings(f"http://127.0.0.1:{port}")
    async with mcp_session(settings) as client:
        started = time.monotonic()
        result = await client.call_tool("get_task", {"task_id": "8812345"})
        assert result.is_error
        message = text_of(result)
        assert "No answer from the Kling API" in message and "KLING_API_BASE_URL" in message
        assert time.monotonic() - started < 30  # retried with backoff, within the client's deadline

        waited = await client.call_tool("wait_for_task", {"task_id": "8812345", "timeout_seconds": 1})
        assert waited.is_error
        assert "did not answer" in text_of(waited) and "unreachable" in text_of(waited)
        assert 'wait_for_task(task_id="8812345")' in text_of(waited)

        # The vendor comes back on the same address: the same server answers the next calls.
        async with serve_sim(port=port, duration=0.5) as vendor:
            sim = vendor.sim
            created = await client.call_tool("create_image", {"prompt": "Back online", "wait_seconds": 20})
            assert not created.is_error, text_of(created)
            assert created.structured_content is not None
            assert created.structured_content["status"] == "succeeded"
            assert sim.counters.creates == 1
