"""Create-body rules: each refusal is HTTP 400 with the vendor code and names the field."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from .sim_helpers import CREATE, Served, ServeFactory, b64_image

pytestmark = pytest.mark.anyio

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
URL = "https://example.com/ref.png"
BIG_ELEMENT = 829836802793406551


def _gif() -> str:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (400, 400), "red").save(out, format="GIF")
    return base64.b64encode(out.getvalue()).decode()


# (case, extra body fields, text the message must contain: the field and the rule)
REFUSALS: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("prompt missing", {"prompt": None}, ("prompt", "required")),
    ("prompt empty", {"prompt": "   "}, ("prompt", "empty")),
    ("prompt not a string", {"prompt": 5}, ("prompt", "string")),
    ("prompt too long", {"prompt": "x" * 2501}, ("prompt", "2500")),
    ("model unknown", {"model_name": "kling-v9"}, ("model_name", "kling-image-o1")),
    ("model not a string", {"model_name": 1}, ("model_name", "string")),
    ("resolution unknown", {"resolution": "8k"}, ("resolution", "1k, 2k, 4k")),
    ("aspect ratio unknown", {"aspect_ratio": "5:4"}, ("aspect_ratio", "16:9")),
    ("result type unknown", {"result_type": "many"}, ("result_type", "single, series")),
    ("n zero", {"n": 0}, ("n", "1 to 9")),
    ("n ten", {"n": 10}, ("n", "1 to 9")),
    ("n as a string", {"n": "2"}, ("n", "integer")),
    ("n as a float", {"n": 1.5}, ("n", "integer")),
    ("n as a boolean", {"n": True}, ("n", "integer")),
    ("series amount one", {"series_amount": 1}, ("series_amount", "2 to 9")),
    ("series amount ten", {"series_amount": 10}, ("series_amount", "2 to 9")),
    ("series amount word", {"series_amount": "many"}, ("series_amount", "auto")),
    ("image list not an array", {"image_list": URL}, ("image_list", "array")),
    ("image entry not an object", {"image_list": [URL]}, ("image_list[0]", "object")),
    ("image entry without image", {"image_list": [{}]}, ("image_list[0].image", "required")),
    ("image empty", {"image_list": [{"image": ""}]}, ("image_list[0].image", "empty")),
    ("image not a string", {"image_list": [{"image": 7}]}, ("image_list[0].image", "string")),
    ("image entry extra key", {"image_list": [{"image": URL, "type": "x"}]}, ("image_list[0]", "'type'")),
    ("image ftp URL", {"image_list": [{"image": "ftp://h/a.png"}]}, ("image_list[0].image", "http")),
    (
        "image with data: prefix",
        {"image_list": [{"image": "data:image/png;base64," + b64_image(400, 400)}]},
        ("image_list[0].image", "data:image"),
    ),
    ("image not Base64", {"image_list": [{"image": "not base64!!"}]}, ("image_list[0].image", "Base64")),
    ("image is a GIF", {"image_list": [{"image": _gif()}]}, ("image_list[0].image", "PNG or JPEG")),
    (
        "image over 10 MB",
        {"image_list": [{"image": base64.b64encode(PNG_MAGIC + bytes(10 * 1024 * 1024)).decode()}]},
        ("image_list[0].image", "10 MB"),
    ),
    (
        "image PNG magic but broken",
        {"image_list": [{"image": base64.b64encode(PNG_MAGIC + b"junk" * 10).decode()}]},
        ("image_list[0].image", "readable"),
    ),
    (
        "image side under 300",
        {"image_list": [{"image": b64_image(299, 400)}]},
        ("image_list[0].image", "300"),
    ),
    (
        "image too wide",
        {"image_list": [{"image": b64_image(760, 300)}]},
        ("image_list[0].image", "1:2.5"),
    ),
    (
        "second image too tall (JPEG)",
        {"image_list": [{"image": URL}, {"image": b64_image(300, 800, "JPEG")}]},
        ("image_list[1].image", "1:2.5"),
    ),
    ("element list not an array", {"element_list": {"element_id": 1}}, ("element_list", "array")),
    (
        "element id as a string",
        {"element_list": [{"element_id": "160"}]},
        ("element_list[0].element_id", "integer"),
    ),
    (
        "element id as a float",
        {"element_list": [{"element_id": 1.0}]},
        ("element_list[0].element_id", "integer"),
    ),
    ("element id missing", {"element_list": [{}]}, ("element_list[0].element_id", "required")),
    (
        "element id negative",
        {"element_list": [{"element_id": -3}]},
        ("element_list[0].element_id", "positive"),
    ),
    (
        "element id past 64 bits",
        {"element_list": [{"element_id": 2**63}]},
        ("element_list[0].element_id", "64-bit"),
    ),
    (
        "images and elements over 10",
        {"image_list": [{"image": URL}] * 6, "element_list": [{"element_id": 1}] * 5},
        ("image_list", "element_list", "10"),
    ),
    ("eleven images", {"image_list": [{"image": URL}] * 11}, ("image_list", "10")),
    ("watermark not an object", {"watermark_info": True}, ("watermark_info", "enabled")),
    (
        "watermark enabled not a boolean",
        {"watermark_info": {"enabled": "yes"}},
        ("watermark_info.enabled", "true"),
    ),
    ("callback not a URL", {"callback_url": "my-server/hook"}, ("callback_url", "http")),
    ("external id not a string", {"external_task_id": 42}, ("external_task_id", "string")),
    ("unknown field", {"negative_prompt": "blurry"}, ("negative_prompt", "not a field")),
    # The capability map.
    ("o1 at 4k", {"resolution": "4k"}, ("resolution", "kling-image-o1", "kling-v3-omni")),
    ("o1 series", {"result_type": "series"}, ("result_type", "kling-image-o1", "single")),
    (
        "v3-omni text-to-image with aspect auto",
        {"model_name": "kling-v3-omni", "aspect_ratio": "auto"},
        ("aspect_ratio", "auto", "16:9"),
    ),
    (
        "v3-omni text-to-image without aspect (auto is the default)",
        {"model_name": "kling-v3-omni"},
        ("aspect_ratio", "default"),
    ),
]


@pytest.mark.parametrize(("case", "fields", "expected"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_rule_breaks_are_refused_naming_the_field(
    served: Served, case: str, fields: dict[str, Any], expected: tuple[str, ...]
) -> None:
    body: dict[str, Any] = {"prompt": "a red fox", **fields}
    body = {k: v for k, v in body.items() if v is not None}
    response = await served.client.post(CREATE, json=body)
    assert response.status_code == 400, response.text
    envelope = response.json()
    assert envelope["code"] == 1201
    assert envelope["data"] is None
    for text in expected:
        assert text in envelope["message"], envelope["message"]
    assert served.sim.task_count() == 0


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("minimal", {}),
    ("prompt of exactly 2500 characters", {"prompt": "y" * 2500}),
    (
        "o1 at 2k with every enum",
        {"resolution": "2k", "aspect_ratio": "21:9", "result_type": "single", "n": 9},
    ),
    (
        "v3-omni at 4k with a fixed ratio",
        {"model_name": "kling-v3-omni", "resolution": "4k", "aspect_ratio": "1:1"},
    ),
    ("v3-omni auto with an image", {"model_name": "kling-v3-omni", "image_list": [{"image": URL}]}),
    (
        "v3-omni auto with an element",
        {"model_name": "kling-v3-omni", "element_list": [{"element_id": BIG_ELEMENT}]},
    ),
    ("v3-omni series auto", {"model_name": "kling-v3-omni", "aspect_ratio": "3:2", "result_type": "series"}),
    ("series amount on a single task is ignored", {"series_amount": 5}),
    (
        "Base64 PNG and JPEG at the limits",
        {"image_list": [{"image": b64_image(300, 750)}, {"image": b64_image(750, 300, "JPEG")}]},
    ),
    ("ten references", {"image_list": [{"image": URL}] * 5, "element_list": [{"element_id": 7}] * 5}),
    ("empty optional strings, as in the vendor's example", {"callback_url": "", "external_task_id": ""}),
    ("watermark on", {"watermark_info": {"enabled": True}}),
    ("nulls for optional fields", {"n": None, "aspect_ratio": None, "image_list": None}),
]


@pytest.mark.parametrize(("case", "fields"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
async def test_valid_bodies_are_accepted(served: Served, case: str, fields: dict[str, Any]) -> None:
    response = await served.client.post(CREATE, json={"prompt": "a red fox", **fields})
    assert response.status_code == 200, response.text
    assert response.json()["code"] == 0
    assert served.sim.task_count() == 1


MALFORMED = [
    ("not JSON", b'{"prompt": "x"', "not valid JSON"),
    ("empty body", b"", "empty"),
    ("a JSON array", b'[{"prompt": "x"}]', "JSON object"),
    ("a JSON string", b'"prompt"', "JSON object"),
    ("NaN", b'{"prompt": "x", "n": NaN}', "not valid JSON"),
    ("not UTF-8", b'{"prompt": "\xff\xfe"}', "not valid JSON"),
    ("deeply nested", b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not valid JSON"),
]


@pytest.mark.parametrize(("case", "raw", "text"), MALFORMED, ids=[m[0] for m in MALFORMED])
async def test_malformed_bodies_get_1200(served: Served, case: str, raw: bytes, text: str) -> None:
    response = await served.client.post(CREATE, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 1200
    assert text in response.json()["message"]


async def test_form_encoded_body_is_refused(served: Served) -> None:
    response = await served.client.post(CREATE, data={"prompt": "x"})
    assert (response.status_code, response.json()["code"]) == (400, 1200)
    assert "Content-Type" in response.json()["message"]


async def test_oversized_body_gets_413_envelope(serve: ServeFactory) -> None:
    async with serve(max_body_bytes=2000) as s:
        body = {"prompt": "a fox", "image_list": [{"image": "A" * 5000}]}
        declared = await s.client.post(CREATE, json=body)
        assert declared.status_code == 413
        assert declared.json()["code"] == 1200
        assert "2000" in declared.json()["message"]

        async def chunks() -> AsyncIterator[bytes]:
            # No Content-Length: the limit must hold while streaming, too.
            for _ in range(10):
                yield b" " * 500

        streamed = await s.client.post(CREATE, content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        assert streamed.json()["code"] == 1200
        assert s.sim.task_count() == 0


async def test_a_body_just_under_the_limit_is_read(serve: ServeFactory) -> None:
    async with serve(max_body_bytes=2000) as s:
        response = await s.client.post(CREATE, json={"prompt": "p" * 1900})
        assert response.status_code == 200, response.text


async def test_duplicate_external_task_id_is_refused(served: Served) -> None:
    first = await served.create(external_task_id="job-1")
    assert first.status_code == 200
    second = await served.create(external_task_id="job-1", prompt="another")
    assert second.status_code == 400
    assert second.json()["code"] == 1201
    assert "external_task_id" in second.json()["message"]
    assert served.sim.task_count() == 1
    assert served.sim.counters.creates_by_external_id["job-1"] == 2
