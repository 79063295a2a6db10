"""The request builder alone (no I/O): parameters in the tool's words → the checked vendor
request, its notes and its cost; refusals in the tool's own argument names."""

from __future__ import annotations

import pytest

from kling_omni_mcp.kling.capabilities import MODEL_CAPABILITIES
from kling_omni_mcp.media.inputs import PreparedImage
from kling_omni_mcp.request_builder import (
    CreateImageParams,
    ServiceError,
    build_create_request,
    check_before_reading,
)

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def _prepared() -> PreparedImage:
    return PreparedImage(
        payload=PNG_B64,
        source_kind="file",
        source="/x/a.png",
        mime_type="image/png",
        width=1,
        height=1,
        byte_size=70,
        converted=False,
    )


def build(**kwargs: object) -> tuple[dict[str, object], list[str], int]:
    images = kwargs.pop("prepared", [])
    params = CreateImageParams(**kwargs)  # type: ignore[arg-type]
    built = build_create_request(params, images, external_task_id="gen-1", default_callback_url=None)  # type: ignore[arg-type]
    return built.request.to_wire(), built.notes, built.units


@pytest.mark.parametrize("model", list(MODEL_CAPABILITIES))
def test_text_only_aspect_ratio_follows_the_capability_map(model: str) -> None:
    wire, notes, _ = build(prompt="A cat", model=model)
    if MODEL_CAPABILITIES[model].auto_aspect_for_text_only:
        assert wire["aspect_ratio"] == "auto" and notes == []
    else:
        assert wire["aspect_ratio"] == "1:1"
        assert notes == [f"aspect_ratio defaulted to 1:1: {model} needs one for text-only prompts."]


@pytest.mark.parametrize("model", list(MODEL_CAPABILITIES))
def test_with_a_reference_image_auto_is_kept(model: str) -> None:
    wire, notes, _ = build(prompt="Like <<<image_1>>>", model=model, prepared=[_prepared()])
    assert wire["aspect_ratio"] == "auto" and notes == []
    assert wire["image_list"] == [{"image": PNG_B64}]


def test_the_request_carries_every_parameter_and_the_generated_external_id() -> None:
    wire, _, units = build(
        prompt="Cats",
        model="kling-v3-omni",
        resolution="4k",
        aspect_ratio="16:9",
        result_type="series",
        series_amount=3,
        watermark=True,
        element_ids=[829836802793406551],
    )
    assert wire == {
        "model_name": "kling-v3-omni",
        "prompt": "Cats",
        "element_list": [{"element_id": 829836802793406551}],
        "resolution": "4k",
        "result_type": "series",
        "n": 1,
        "series_amount": 3,
        "aspect_ratio": "16:9",
        "watermark_info": {"enabled": True},
        "external_task_id": "gen-1",
    }
    assert units == 3 * 16


def test_series_amount_is_dropped_for_single_output() -> None:
    wire, _, units = build(prompt="Cats", n=2, series_amount=3)
    assert "series_amount" not in wire and units == 16


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"prompt": "A", "model": "kling-image-o1", "resolution": "4k"},
            "resolution='4k' is not allowed: kling-image-o1 supports 1k, 2k. "
            "Choose one of 1k, 2k, or use kling-v3-omni for 4k.",
        ),
        (
            {"prompt": "A", "result_type": "series"},
            "result_type='series' is not allowed: kling-image-o1 does not support series output. "
            "Use model=kling-v3-omni for a series, or result_type='single' with n images.",
        ),
    ],
)
def test_rule_refusals_use_the_tools_argument_names_in_whole_sentences(
    kwargs: dict[str, object], expected: str
) -> None:
    with pytest.raises(ServiceError) as info:
        build(**kwargs)
    assert str(info.value) == expected


def test_counts_are_checked_before_any_file_is_read() -> None:
    with pytest.raises(ServiceError) as info:
        check_before_reading(CreateImageParams(prompt="<<<image_2>>>", images=["/a.png"]))
    assert str(info.value) == (
        "prompt='<<<image_2>>>' is not allowed: refers to image 2 but only 1 images were given in the "
        "images argument. Add the missing images to the images argument, or refer only to image_1..image_1."
    )
    with pytest.raises(ServiceError, match=r"^images and element_ids together hold 11 inputs"):
        check_before_reading(CreateImageParams(prompt="A", images=["/a"] * 10, element_ids=[1]))
