"""Injected faults, armed from Python and from the admin endpoint, as a client sees them."""

from __future__ import annotations

import time

import anyio
import httpx2
import pytest

from .sim_helpers import CREATE, Served, ServeFactory

pytestmark = pytest.mark.anyio


async def test_fail_next_n_answers_with_the_given_error_then_recovers(served: Served) -> None:
    served.sim.faults.fail_next(2, http_status=503, code=5001, message="Under maintenance")
    for _ in range(2):
        response = await served.client.get(CREATE)
        assert response.status_code == 503
        assert response.json() == {
            **response.json(),
            "code": 5001,
            "message": "Under maintenance",
            "data": None,
        }
    assert (await served.client.get(CREATE)).status_code == 200


async def test_fail_next_of_one_kind_leaves_other_kinds_alone(served: Served) -> None:
    served.sim.faults.fail_next(1, http_status=429, code=1303, message="Too many tasks", kind="create")
    assert (await served.client.get(CREATE)).status_code == 200  # a list is not a create
    refused = await served.create(external_task_id="retry-me")
    assert (refused.status_code, refused.json()["code"]) == (429, 1303)
    assert served.sim.task_count() == 0
    # The attempt still counts: a test can tell a blind re-send from a single one.
    assert served.sim.counters.creates_by_external_id["retry-me"] == 1
    assert (await served.create(external_task_id="retry-me")).status_code == 200
    assert served.sim.counters.creates_by_external_id["retry-me"] == 2


async def test_delay_holds_the_answer_back(served: Served) -> None:
    served.sim.faults.delay_next(1, seconds=0.4, kind="query")
    start = time.monotonic()
    assert (await served.client.get(CREATE)).status_code == 200  # lists are not delayed
    assert time.monotonic() - start < 0.3
    start = time.monotonic()
    response = await served.query("unknown")
    assert time.monotonic() - start >= 0.4
    assert response.status_code == 400
    with pytest.raises(httpx2.ReadTimeout):
        served.sim.faults.delay_next(1, seconds=1.0)
        await served.client.get(CREATE, timeout=0.2)


async def test_lost_answer_is_a_transport_error_but_the_task_exists(served: Served) -> None:
    served.sim.faults.lose_next_create()
    with pytest.raises(httpx2.TransportError):
        await served.create(external_task_id="lost-1")
    task = served.sim.get_task("lost-1")
    assert task is not None
    # Querying by the external id finds it: the documented way to recover.
    found = await served.query("lost-1")
    assert found.status_code == 200 and found.json()["data"]["task_id"] == task.task_id
    # Only the next create was lost.
    assert (await served.create(external_task_id="lost-2")).status_code == 200


async def test_cut_download_is_a_transport_error(served: Served) -> None:
    data = await served.wait_final((await served.create_ok())["task_id"])
    url = data["task_result"]["images"][0]["url"]
    served.sim.faults.cut_next_downloads(1)
    with pytest.raises(httpx2.RemoteProtocolError):
        await served.client.get(url)
    whole = await served.client.get(url)
    assert whole.status_code == 200 and whole.content.startswith(b"\x89PNG")


async def test_html_download_is_a_200_html_page(served: Served) -> None:
    data = await served.wait_final((await served.create_ok())["task_id"])
    served.sim.faults.html_next_downloads(1)
    response = await served.client.get(data["task_result"]["images"][0]["url"])
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert not response.content.startswith(b"\x89PNG")


async def test_next_created_task_fails_with_the_policy_message(served: Served) -> None:
    served.sim.faults.fail_next_tasks(1, message="Prompt refused by content safety policy")
    failing = await served.create_ok()
    passing = await served.create_ok()
    failed = await served.wait_final(failing["task_id"])
    assert failed["task_status"] == "failed"
    assert failed["task_status_msg"] == "Prompt refused by content safety policy"
    assert failed["final_unit_deduction"] == "0"
    assert failed["task_result"]["images"] == []
    assert (await served.wait_final(passing["task_id"]))["task_status"] == "succeed"


async def test_fail_task_by_external_id_now(serve: ServeFactory) -> None:
    async with serve(duration=30) as s:
        await s.create_ok(external_task_id="doomed")
        s.sim.fail_task("doomed", "Image refused by policy", immediately=True)
        data = (await s.query("doomed")).json()["data"]
        assert (data["task_status"], data["task_status_msg"]) == ("failed", "Image refused by policy")
        with pytest.raises(KeyError):
            s.sim.fail_task("nobody")
        with pytest.raises(ValueError, match="already finished"):
            s.sim.fail_task("doomed")


async def test_concurrency_cap_counts_image_slots(serve: ServeFactory) -> None:
    async with serve(duration=0.6, concurrency_limit=3) as s:
        assert (await s.create(n=2)).status_code == 200
        over = await s.create(n=2)
        assert (over.status_code, over.json()["code"]) == (429, 1303)
        assert "3" in over.json()["message"]
        assert (await s.create(n=1)).status_code == 200  # exactly at the cap
        for _ in range(50):  # slots free up as tasks finish
            if (await s.create(n=3)).status_code == 200:
                break
            await anyio.sleep(0.1)
        assert s.sim.task_count() == 3


async def test_series_holds_one_slot_per_image(serve: ServeFactory) -> None:
    async with serve(duration=5, concurrency_limit=4) as s:
        series = {"model_name": "kling-v3-omni", "aspect_ratio": "1:1", "result_type": "series"}
        assert (await s.create(**series, series_amount=4)).status_code == 200
        assert (await s.create()).json()["code"] == 1303


async def test_admin_endpoint_arms_faults_and_reports_counters(served: Served) -> None:
    arm = await served.client.post(
        "/admin/faults",
        json={
            "action": "fail_next",
            "count": 1,
            "status": 503,
            "code": 5001,
            "message": "down",
            "kind": "list",
        },
    )
    assert arm.status_code == 200 and arm.json()["data"]["armed"]["failures"][0]["code"] == 5001
    assert (await served.client.get(CREATE)).status_code == 503
    await served.client.post("/admin/faults", json={"action": "lose_next_create"})
    with pytest.raises(httpx2.TransportError):
        await served.create(external_task_id="via-admin")
    doom = {"action": "fail_task", "id": "via-admin", "message": "no", "immediately": True}
    assert (await served.client.post("/admin/faults", json=doom)).status_code == 200
    assert (await served.query("via-admin")).json()["data"]["task_status_msg"] == "no"
    counters = (await served.client.get("/admin/counters")).json()["data"]
    assert counters["tasks"] == 1
    assert counters["create_requests"] == 1 and counters["creates"] == 1
    assert counters["creates_by_external_id"] == {"via-admin": 1}
    assert counters["lists"] == 1 and counters["faults_served"] == 1 and counters["queries"] == 1
    reset = await served.client.post("/admin/reset")
    assert reset.status_code == 200
    assert served.sim.task_count() == 0 and served.sim.counters.create_requests == 0


@pytest.mark.parametrize(
    "body",
    [
        {"action": "explode"},
        {"action": "fail_next", "count": 0},
        {"action": "fail_next", "kind": "upload"},
        {"action": "delay_next", "seconds": -1},
        {"action": "fail_task", "id": "missing"},
        {"action": "lose_next_create", "bogus": 1},
        {"count": 1},
    ],
)
async def test_admin_refuses_bad_actions_clearly(served: Served, body: dict[str, object]) -> None:
    response = await served.client.post("/admin/faults", json=body)
    assert response.status_code == 400
    assert response.json()["code"] in (1200, 1201)
    assert response.json()["message"]
