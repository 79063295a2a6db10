"""KLING_MAX_UNITS_PER_DAY and KLING_CONFIRM_ABOVE_UNITS, end to end through a real MCP client
against the simulator: refusals happen before any create reaches the vendor (counted there)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp_types import ElicitRequestParams, ElicitResult

from kling_omni_mcp.config import Settings
from kling_omni_mcp.ledger import LEDGER_FILE, FileLedger
from kling_omni_mcp.server.app import build_server
from tests.conftest import SimHandle, text_of

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]


async def create(client: Client, **args: Any) -> Any:
    return await client.call_tool("create_image", {"prompt": "A lighthouse at dusk", **args})


async def test_budget_refuses_before_any_vendor_create_and_says_what_is_left(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, max_units_per_day=20)
    async with Client(build_server(settings)) as client:
        first = await create(client, n=2)  # 16 units
        assert not first.is_error, text_of(first)
        notes = " ".join(first.structured_content["notes"])
        assert "Estimated cost: 16 units." in notes
        assert "16 of 20 units used today, 4 left" in notes
        assert simulator.sim.counters.create_requests == 1

        refused = await create(client)  # 8 more would make 24 > 20
        assert refused.is_error
        text = text_of(refused)
        for part in (
            "daily budget",
            "estimated at 8 units",
            "16 of the 20 units allowed per UTC day (KLING_MAX_UNITS_PER_DAY)",
            "so 4 are left",
            "Nothing was sent",
            "resets at 00:00 UTC",
        ):
            assert part in text, (part, text)
        assert simulator.sim.counters.create_requests == 1  # the refusal never reached the vendor


async def test_no_ceiling_when_unset(simulator: SimHandle, make_settings: Callable[..., Settings]) -> None:
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        for _ in range(3):
            result = await create(client, n=9)
            assert not result.is_error, text_of(result)
            notes = result.structured_content["notes"]
            assert "Estimated cost: 72 units." in notes
            assert not any("KLING_MAX_UNITS_PER_DAY" in n for n in notes)
    assert simulator.sim.counters.create_requests == 3


async def test_ledger_survives_a_restart_and_a_fresh_folder_starts_empty(
    simulator: SimHandle, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(simulator.base_url, max_units_per_day=10)
    async with Client(build_server(settings)) as client:
        assert not (await create(client)).is_error
    assert (settings.output_dir / LEDGER_FILE).is_file()

    async with Client(build_server(settings)) as client:  # a new server process, same folder
        again = await create(client)
        assert again.is_error and "8 of the 10 units" in text_of(again)

    fresh = make_settings(simulator.base_url, max_units_per_day=10, output_dir=tmp_path / "fresh")
    async with Client(build_server(fresh)) as client:
        assert not (await create(client)).is_error
    assert simulator.sim.counters.create_requests == 2


async def test_concurrent_creates_cannot_both_pass_the_ceiling(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, max_units_per_day=8)
    results: list[Any] = []
    async with Client(build_server(settings)) as first, Client(build_server(settings)) as second:

        async def run(client: Client) -> None:
            results.append(await create(client))

        async with anyio.create_task_group() as tg:
            for client in (first, second, first, second):
                tg.start_soon(run, client)
    assert sorted(r.is_error for r in results) == [False, True, True, True]
    assert simulator.sim.counters.create_requests == 1


async def test_a_failed_create_releases_its_units(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, max_units_per_day=8)
    simulator.sim.faults.fail_next(http_status=400, code=1200, message="bad request", kind="create")
    async with Client(build_server(settings)) as client:
        failed = await create(client)
        assert failed.is_error and "daily budget" not in text_of(failed)
        ok = await create(client)
        assert not ok.is_error, text_of(ok)


def test_file_ledger_counts_together_across_processes(tmp_path: Path) -> None:
    """Four processes book 1 unit 30 times each against a ceiling of 50: exactly 50 are accepted."""
    script = (
        "import sys; from pathlib import Path; from kling_omni_mcp.ledger import FileLedger\n"
        "ledger = FileLedger(Path(sys.argv[1]))\n"
        "print(sum(ledger.reserve('2026-01-01', f'{sys.argv[2]}-{i}', 1, 50).accepted for i in range(30)))\n"
    )
    args = [sys.executable, "-c", script, str(tmp_path)]
    procs = [subprocess.Popen([*args, str(n)], stdout=subprocess.PIPE, text=True) for n in range(4)]
    accepted = [int(proc.communicate(timeout=60)[0]) for proc in procs]
    assert sum(accepted) == 50, accepted
    assert FileLedger(tmp_path).spent("2026-01-01") == 50
    data = json.loads((tmp_path / LEDGER_FILE).read_text())
    assert len(data["days"]["2026-01-01"]) == 50


# --- confirmation (elicitation) ------------------------------------------------------------------


def answering(action: str, create_it: bool = True) -> tuple[Callable[..., Any], list[str]]:
    asked: list[str] = []

    async def callback(context: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        content = {"create": create_it} if action == "accept" else None
        return ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    return callback, asked


@pytest.mark.parametrize("mode", MODES)
async def test_confirmation_accepted_creates(
    mode: str, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    callback, asked = answering("accept")
    settings = make_settings(simulator.base_url, confirm_above_units=10)
    async with Client(build_server(settings), mode=mode, elicitation_callback=callback) as client:
        cheap = await create(client)  # 8 units: at or under the threshold, nobody is asked
        assert not cheap.is_error and asked == []
        costly = await create(client, n=2, resolution="2k")
        assert not costly.is_error, text_of(costly)
    [message] = asked
    for part in ("16 units", "A lighthouse at dusk", "kling-image-o1, 2k, 2 image(s)"):
        assert part in message, message
    assert simulator.sim.counters.create_requests == 2


@pytest.mark.parametrize(("action", "create_it"), [("decline", True), ("cancel", True), ("accept", False)])
async def test_confirmation_declined_or_cancelled_creates_nothing(
    action: str, create_it: bool, simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    callback, asked = answering(action, create_it)
    settings = make_settings(simulator.base_url, confirm_above_units=10, max_units_per_day=100)
    async with Client(build_server(settings), elicitation_callback=callback) as client:
        result = await create(client, n=2)
        assert result.is_error
        assert "did not confirm spending 16 units" in text_of(result)
        assert "nothing was created" in text_of(result)
    assert len(asked) == 1
    assert simulator.sim.counters.create_requests == 0
    assert FileLedger(settings.output_dir).spent(_today()) == 0  # nothing booked either


async def test_client_without_elicitation_gets_an_explaining_error(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(simulator.base_url, confirm_above_units=10)
    async with Client(build_server(settings)) as client:
        result = await create(client, n=2)
        assert result.is_error
        text = text_of(result)
        assert "KLING_CONFIRM_ABOVE_UNITS=10" in text and "elicitation" in text and "16 units" in text
        assert not (await create(client)).is_error  # 8 units: no confirmation needed
    assert simulator.sim.counters.create_requests == 1


def _today() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).date().isoformat()
