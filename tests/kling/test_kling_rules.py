"""The model registry and request rules: every documented rule refuses with field, value and fix."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kling_omni_mcp.kling.errors import KlingValidationError
from kling_omni_mcp.kling.models import CreateImageRequest
from kling_omni_mcp.kling.rules import (
    MODEL_CAPABILITIES,
    check_prompt_references,
    describe_models,
    estimate_units,
    image_count,
    prompt_references,
    validate_create_request,
)

PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
JPEG_B64 = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 40).decode()
GIF_B64 = base64.b64encode(b"GIF89a" + b"\0" * 42).decode()
URL = "https://example.com/a.png"


def req(**fields: Any) -> CreateImageRequest:
    fields.setdefault("prompt", "a red fox in snow")
    return CreateImageRequest.model_validate(fields)


def images(count: int) -> list[dict[str, str]]:
    return [{"image": URL} for _ in range(count)]


def elements(count: int) -> list[dict[str, int]]:
    return [{"element_id": 829836802793406551 + i} for i in range(count)]


VALID = [
    req(),
    req(model_name="kling-image-o1", resolution="2k", n=9),
    req(model_name="kling-v3-omni", resolution="4k", aspect_ratio="1:1"),
    req(model_name="kling-v3-omni", image_list=images(1)),  # auto aspect is fine with an image
    req(model_name="kling-v3-omni", element_list=elements(1), prompt="<<<element_1>>> on a beach"),
    req(model_name="kling-v3-omni", aspect_ratio="16:9", result_type="series", series_amount=2),
    req(model_name="kling-v3-omni", aspect_ratio="16:9", result_type="series", series_amount="auto"),
    req(model_name="kling-v3-omni", aspect_ratio="16:9", result_type="series"),
    req(image_list=[{"image": PNG_B64}, {"image": JPEG_B64}], prompt="<<<image_1>>> and <<<image_2>>>"),
    req(image_list=images(5), element_list=elements(5)),
    req(prompt="x" * 2500),
    req(
        prompt="Merge all the people in the images into the <<<object_1>>> image",
        element_list=elements(1),
        image_list=images(3),
    ),
    req(callback_url="https://hooks.example.com/kling", external_task_id="my-id-1"),
]


@pytest.mark.parametrize("request_", VALID, ids=range(len(VALID)))
def test_valid_requests_pass(request_: CreateImageRequest) -> None:
    validate_create_request(request_)


# (request, field named in the error, words the message must contain)
INVALID: list[tuple[CreateImageRequest, str, str]] = [
    (req(prompt=""), "prompt", "required"),
    (req(prompt="   "), "prompt", "required"),
    (req(prompt="x" * 2501), "prompt", "at most 2500"),
    (req(image_list=[]), "image_list", "empty"),
    (req(image_list=[{"image": ""}]), "image_list[1].image", "must not be empty"),
    (req(image_list=[{"image": "data:image/png;base64," + PNG_B64}]), "image_list[1].image", "data:"),
    (req(image_list=[{"image": "ftp://example.com/a.png"}]), "image_list[1].image", "http"),
    (req(image_list=[{"image": "not base64!"}]), "image_list[1].image", "Base64"),
    (req(image_list=[{"image": GIF_B64}]), "image_list[1].image", "JPEG and PNG"),
    (req(element_list=[]), "element_list", "empty"),
    (req(element_list=[{"element_id": 0}]), "element_list[1].element_id", "positive"),
    (req(element_list=[{"element_id": -5}]), "element_list[1].element_id", "positive"),
    (req(image_list=images(6), element_list=elements(5)), "image_list+element_list", "at most 10"),
    (req(image_list=images(11)), "image_list+element_list", "at most 10"),
    (req(n=0), "n", "between 1 and 9"),
    (req(n=10), "n", "between 1 and 9"),
    (req(series_amount=3), "series_amount", "only allowed with result_type='series'"),
    (
        req(model_name="kling-v3-omni", aspect_ratio="1:1", result_type="series", series_amount=1),
        "series_amount",
        "between 2 and 9",
    ),
    (
        req(model_name="kling-v3-omni", aspect_ratio="1:1", result_type="series", series_amount=10),
        "series_amount",
        "between 2 and 9",
    ),
    (req(model_name="kling-v3-omni", aspect_ratio="1:1", result_type="series", n=3), "n", "ignored"),
    (req(model_name="kling-image-o1", result_type="series"), "result_type", "does not support series"),
    (req(model_name="kling-image-o1", resolution="4k"), "resolution", "supports 1k, 2k"),
    (req(model_name="kling-v3-omni"), "aspect_ratio", "pure text-to-image"),
    (req(model_name="kling-v3-omni", aspect_ratio="auto", resolution="2k"), "aspect_ratio", "auto"),
    (req(prompt="put <<<image_3>>> here", image_list=images(2)), "prompt", "only 2 images were given"),
    (req(prompt="use <<<image_1>>>"), "prompt", "only 0 images"),
    (req(prompt="use <<<element_2>>>", element_list=elements(1)), "prompt", "only 1 elements"),
    (req(prompt="use <<<object_1>>>", image_list=images(1)), "prompt", "only 0 elements"),
    (req(prompt="use <<<image_0>>>", image_list=images(1)), "prompt", "1-based"),
    (req(callback_url="ftp://example.com/hook"), "callback_url", "http"),
    (req(callback_url="not a url"), "callback_url", "http"),
    (req(external_task_id="   "), "external_task_id", "whitespace"),
]


@pytest.mark.parametrize(
    ("request_", "field", "words"), INVALID, ids=[f"{f}-{i}" for i, (_, f, _) in enumerate(INVALID)]
)
def test_invalid_requests_are_refused(request_: CreateImageRequest, field: str, words: str) -> None:
    with pytest.raises(KlingValidationError) as info:
        validate_create_request(request_)
    error = info.value
    assert error.field == field
    assert field in str(error)  # the message names the field...
    assert words in str(error) or words in (error.hint or "")  # ...and the rule


def test_error_message_says_what_to_change() -> None:
    with pytest.raises(KlingValidationError) as info:
        validate_create_request(req(model_name="kling-image-o1", resolution="4k"))
    assert "'4k'" in str(info.value)
    assert "kling-v3-omni" in (info.value.hint or "")
    assert "kling-v3-omni" in info.value.describe()


def test_prompt_references() -> None:
    refs = prompt_references(
        "<<<image_1>>> with <<<image_2>>>, <<<element_1>>>, <<<object_3>>> and <<image_4>>"
    )
    assert refs == {"image": {1, 2, 4}, "element": {1}, "object": {3}}
    assert prompt_references("no references, just <<<text>>>") == {
        "image": set(),
        "element": set(),
        "object": set(),
    }


@pytest.mark.parametrize(
    ("request_", "count", "units"),
    [
        (req(), 1, 8),
        (req(n=4, resolution="2k"), 4, 32),
        (req(model_name="kling-v3-omni", resolution="4k", aspect_ratio="1:1", n=2), 2, 32),
        (req(model_name="kling-v3-omni", aspect_ratio="1:1", result_type="series", series_amount=3), 3, 24),
        (req(model_name="kling-v3-omni", aspect_ratio="1:1", result_type="series"), 4, 32),
        (
            req(
                model_name="kling-v3-omni",
                resolution="4k",
                aspect_ratio="1:1",
                result_type="series",
                series_amount="auto",
            ),
            9,
            144,
        ),
    ],
)
def test_image_count_and_estimate(request_: CreateImageRequest, count: int, units: int) -> None:
    assert image_count(request_) == count
    assert estimate_units(request_) == units


def test_registry_and_description_agree() -> None:
    text = describe_models()
    for caps in MODEL_CAPABILITIES.values():
        assert caps.name in text
        assert set(caps.units_per_image) == set(caps.resolutions)
        for res, units in caps.units_per_image.items():
            assert f"{res} {units}u" in text
    assert "kling-v3-omni (1k 8u/2k 8u/4k 16u per image; series, text-only needs an aspect_ratio)" in text
    assert not MODEL_CAPABILITIES["kling-image-o1"].supports_series
    assert "4k" not in MODEL_CAPABILITIES["kling-image-o1"].resolutions


def test_check_prompt_references_needs_only_counts() -> None:
    check_prompt_references("<<<image_2>>> next to <<<object_1>>>", images=2, elements=1)
    with pytest.raises(KlingValidationError) as info:
        check_prompt_references("<<<image_2>>> next to <<<object_1>>>", images=1, elements=1)
    assert "only 1 images were given" in str(info.value)
