"""Task lifecycle, queries, lists, result files and prices, as a client sees them over HTTP."""

from __future__ import annotations

import io
import json
import time

import anyio
import pytest
from PIL import Image

from kling_omni_mcp.kling.models import TaskData

from .sim_helpers import CREATE, Served, ServeFactory, b64_image

pytestmark = pytest.mark.anyio

BIG_ELEMENT = 829836802793406551


async def _png(served: Served, url: str) -> Image.Image:
    response = await served.client.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    image.load()
    return image


async def test_create_answers_the_documented_fields(served: Served) -> None:
    before = int(time.time() * 1000)
    response = await served.create(external_task_id="mine-1")
    envelope = response.json()
    assert envelope["code"] == 0 and envelope["request_id"]
    data = envelope["data"]
    assert set(data) == {"task_id", "task_info", "task_status", "created_at", "updated_at"}
    assert isinstance(data["task_id"], str) and data["task_id"]
    assert data["task_info"] == {"external_task_id": "mine-1"}
    assert data["task_status"] == "submitted"
    assert before <= data["created_at"] <= int(time.time() * 1000)


async def test_task_goes_submitted_processing_succeed(serve: ServeFactory) -> None:
    async with serve(duration=1.0) as s:
        task_id = (await s.create_ok())["task_id"]
        seen: list[str] = []
        with anyio.fail_after(5):
            while not seen or seen[-1] != "succeed":
                status = (await s.query(task_id)).json()["data"]["task_status"]
                if not seen or seen[-1] != status:
                    seen.append(status)
                await anyio.sleep(0.03)
        assert seen == ["submitted", "processing", "succeed"]


async def test_query_data_parses_with_the_wire_model(served: Served) -> None:
    created = await served.create_ok(n=2, aspect_ratio="16:9", external_task_id="wire-1")
    data = await served.wait_final(created["task_id"])
    envelope = (await served.query(created["task_id"])).json()
    assert envelope["code"] == 0
    task = TaskData.model_validate(envelope["data"])
    assert task.task_status == "succeed" and task.task_status_msg == ""
    assert task.external_task_id == "wire-1"
    assert [image.index for image in task.result_images] == [0, 1]
    assert task.watermark_info is not None and task.watermark_info.enabled is False
    assert task.created_at == created["created_at"]
    assert task.updated_at is not None and task.updated_at >= task.created_at + 250
    assert data["task_result"]["result_type"] == "single" and data["task_result"]["series_images"] == []


async def test_task_is_found_by_external_id(served: Served) -> None:
    created = await served.create_ok(external_task_id="order-77")
    by_external = await served.query("order-77")
    assert by_external.status_code == 200
    assert by_external.json()["data"]["task_id"] == created["task_id"]


@pytest.mark.parametrize("task_id", ["no-such-task", "123456789", "order 1"])
async def test_unknown_id_is_400_1201(served: Served, task_id: str) -> None:
    response = await served.query(task_id)
    assert response.status_code == 400
    assert response.json()["code"] == 1201
    assert response.json()["message"] == "Task not found by id/external id"


async def test_list_is_newest_first_and_paged(served: Served) -> None:
    ids = [(await served.create_ok(prompt=f"picture {i}"))["task_id"] for i in range(5)]
    everything = (await served.client.get(CREATE)).json()["data"]
    assert [t["task_id"] for t in everything] == ids[::-1]
    page2 = (await served.client.get(CREATE, params={"pageNum": 2, "pageSize": 2})).json()["data"]
    assert [t["task_id"] for t in page2] == [ids[2], ids[1]]
    beyond = (await served.client.get(CREATE, params={"pageNum": 9, "pageSize": 2})).json()
    assert beyond["code"] == 0 and beyond["data"] == []
    assert served.sim.counters.lists == 3


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"pageNum": 0}, "pageNum"),
        ({"pageNum": 1001}, "pageNum"),
        ({"pageNum": "x"}, "pageNum"),
        ({"pageSize": 0}, "pageSize"),
        ({"pageSize": 501}, "pageSize"),
        ({"pageSize": "-1"}, "pageSize"),
    ],
)
async def test_bad_page_params_are_refused(served: Served, params: dict[str, object], name: str) -> None:
    response = await served.client.get(CREATE, params=params)
    assert response.status_code == 400
    assert response.json()["code"] == 1200
    assert name in response.json()["message"]


@pytest.mark.parametrize(
    ("fields", "size"),
    [
        ({"aspect_ratio": "16:9"}, (128, 72)),
        ({"aspect_ratio": "9:16", "resolution": "2k"}, (144, 256)),
        ({"aspect_ratio": "21:9"}, (128, 55)),
        ({}, (128, 128)),  # auto without a measurable input: 1:1
        ({"image_list": [{"image": b64_image(600, 400)}]}, (128, 85)),  # auto follows the first input
    ],
)
async def test_result_png_has_the_requested_size(
    served: Served, fields: dict[str, object], size: tuple[int, int]
) -> None:
    data = await served.wait_final((await served.create_ok(**fields))["task_id"])
    image = await _png(served, data["task_result"]["images"][0]["url"])
    assert image.format == "PNG"
    assert image.size == size


async def test_4k_result_is_4096_on_the_long_side(serve: ServeFactory) -> None:
    async with serve(image_scale=1.0, duration=0.05) as s:
        data = await s.wait_final(
            (await s.create_ok(model_name="kling-v3-omni", resolution="4k", aspect_ratio="3:2"))["task_id"]
        )
        image = await _png(s, data["task_result"]["images"][0]["url"])
        assert image.size == (4096, 2731)


async def test_images_differ_per_index_and_watermark(served: Served) -> None:
    data = await served.wait_final((await served.create_ok(n=2))["task_id"])
    first, second = data["task_result"]["images"]
    plain = (await served.client.get(first["url"])).content
    other = (await served.client.get(second["url"])).content
    marked = (await served.client.get(first["watermark_url"])).content
    assert len({plain, other, marked}) == 3
    again = (await served.client.get(first["url"])).content
    assert again == plain  # rendered once, served the same way every time
    assert served.sim.counters.downloads == 4


async def test_result_files_of_unfinished_or_unknown_tasks_are_404(serve: ServeFactory) -> None:
    async with serve(duration=30) as s:
        task_id = (await s.create_ok())["task_id"]
        for path in (f"/results/{task_id}/0.png", "/results/nope/0.png"):
            response = await s.client.get(path)
            assert (response.status_code, response.json()["code"]) == (404, 1203)


@pytest.mark.parametrize(
    ("amount", "expected"),
    [(3, 3), ("auto", 4), (None, 4)],
)
async def test_series_fills_series_images(served: Served, amount: object, expected: int) -> None:
    body: dict[str, object] = {"model_name": "kling-v3-omni", "result_type": "series", "aspect_ratio": "4:3"}
    if amount is not None:
        body["series_amount"] = amount
    data = await served.wait_final((await served.create_ok(**body))["task_id"])
    result = data["task_result"]
    assert result["result_type"] == "series"
    assert result["images"] == []
    assert [img["index"] for img in result["series_images"]] == list(range(expected))
    last = await _png(served, result["series_images"][-1]["url"])
    assert last.size == (128, 96)


@pytest.mark.parametrize(
    ("fields", "units"),
    [
        ({}, "8"),
        ({"n": 3, "resolution": "2k"}, "24"),
        ({"model_name": "kling-v3-omni", "aspect_ratio": "1:1", "resolution": "2k", "n": 2}, "16"),
        ({"model_name": "kling-v3-omni", "aspect_ratio": "1:1", "resolution": "4k"}, "16"),
        (
            {"model_name": "kling-v3-omni", "aspect_ratio": "1:1", "resolution": "4k"}
            | {"result_type": "series", "series_amount": 2, "n": 5},
            "32",
        ),
    ],
)
async def test_final_unit_deduction_follows_the_price_table(
    served: Served, fields: dict[str, object], units: str
) -> None:
    created = await served.create_ok(**fields)
    pending = (await served.query(created["task_id"])).json()["data"]
    assert pending["final_unit_deduction"] == "0"
    data = await served.wait_final(created["task_id"])
    assert data["final_unit_deduction"] == units


async def test_watermark_info_is_echoed(served: Served) -> None:
    data = await served.wait_final((await served.create_ok(watermark_info={"enabled": True}))["task_id"])
    assert data["watermark_info"] == {"enabled": True}
    assert data["task_result"]["images"][0]["watermark_url"].endswith("0-watermark.png")


async def test_large_element_ids_are_kept_exact(served: Served) -> None:
    raw = json.dumps({"prompt": "merge <<<element_1>>>", "element_list": [{"element_id": BIG_ELEMENT}]})
    assert str(BIG_ELEMENT) in raw  # the digits as sent, no float rounding on the way
    response = await served.client.post(CREATE, content=raw, headers={"content-type": "application/json"})
    task = served.sim.tasks[response.json()["data"]["task_id"]]
    assert task.element_ids == (BIG_ELEMENT,)
    assert task.body["element_list"][0]["element_id"] == BIG_ELEMENT
    assert float(BIG_ELEMENT) != BIG_ELEMENT


async def test_result_urls_follow_the_callers_host(served: Served) -> None:
    data = await served.wait_final((await served.create_ok())["task_id"])
    assert data["task_result"]["images"][0]["url"].startswith(served.url + "/results/")


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/nothing", 404, 1203),
        ("GET", "/v1/images/omni-image/", 404, 1203),
        ("DELETE", "/v1/images/omni-image", 404, 1202),
        ("PUT", "/v1/images/omni-image/abc", 404, 1202),
        ("POST", "/results/x/0.png", 404, 1202),
    ],
)
async def test_unknown_routes_and_methods_get_the_envelope(
    served: Served, method: str, path: str, status: int, code: int
) -> None:
    response = await served.client.request(method, path)
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["data"] is None


async def test_wrong_method_names_the_allowed_ones(served: Served) -> None:
    response = await served.client.delete(CREATE)
    assert "GET" in response.headers["allow"] and "POST" in response.headers["allow"]


async def test_a_bug_is_a_500_envelope_not_a_crash(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(task_id: str) -> None:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(served.sim.store, "get", broken)
    response = await served.query("anything")
    assert response.status_code == 500
    assert response.json()["code"] == 5000
    assert (await served.client.get(CREATE)).status_code == 200  # still serving
