"""From what ``create_image`` was asked (in the tool's words) to the vendor request: pure, no I/O.

``check_before_reading`` refuses cheap mistakes before any input file is read;
``build_create_request`` turns the parameters and the prepared inputs into a
``CreateImageRequest`` plus the notes and cost estimate the user sees, checked against every
rule. Rule refusals come back as ``ServiceError`` messages that name the tool's own arguments
(``images``, ``element_ids``, ``model``), not the vendor's wire fields.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from kling_omni_mcp.kling.capabilities import (
    DEFAULT_MODEL,
    MAX_REFERENCES,
    RESOLUTIONS,
    AspectRatio,
    ModelName,
    Resolution,
    ResultType,
)
from kling_omni_mcp.kling.errors import KlingValidationError
from kling_omni_mcp.kling.models import CreateImageRequest, ElementRef, ImageRef, WatermarkInfo
from kling_omni_mcp.kling.rules import (
    capabilities_for,
    check_prompt_references,
    estimate_units,
    validate_create_request,
)
from kling_omni_mcp.media.inputs import PreparedImage

__all__ = [
    "BuiltRequest",
    "CreateImageParams",
    "ServiceError",
    "build_create_request",
    "check_before_reading",
    "refusal_for",
]

#: The aspect ratio chosen for a text-only prompt when the model refuses ``auto`` there.
TEXT_ONLY_ASPECT_RATIO = "1:1"


class ServiceError(Exception):
    """A refusal whose message tells the user what to change."""


@dataclass
class CreateImageParams:
    """What ``create_image`` was asked for, in the tool's words (validated by the tool schema)."""

    prompt: str
    images: Sequence[str] = ()
    element_ids: Sequence[int] = ()
    model: ModelName = DEFAULT_MODEL
    resolution: Resolution = RESOLUTIONS[0]
    aspect_ratio: AspectRatio | None = None
    n: int = 1
    result_type: ResultType = "single"
    series_amount: int | Literal["auto"] | None = None
    watermark: bool | None = None
    external_task_id: str | None = None
    callback_url: str | None = None


@dataclass
class BuiltRequest:
    """The request to send, the notes to show the user and the estimated cost in units."""

    request: CreateImageRequest
    units: int
    notes: list[str] = field(default_factory=list)


# Wire field → the tool argument the model wrote. Rules speak the vendor's wire format; the
# model only knows the tool's arguments, so every refusal it reads is translated.
_ARGUMENT_NAMES = {
    "model_name": "model",
    "image_list": "images",
    "element_list": "element_ids",
    "watermark_info": "watermark",
}
_INDEXED_FIELD = re.compile(r"^(image_list|element_list)\[(\d+)\](?:\.\w+)?$")
_WIRE_WORD = re.compile(r"\b(model_name|image_list|element_list|watermark_info)\b(=?)")


def _argument_for(wire_field: str) -> str:
    indexed = _INDEXED_FIELD.match(wire_field)
    if indexed:
        position = int(indexed[2])  # 1-based in the rules, like <<<image_1>>>
        kind = "image" if indexed[1] == "image_list" else "element"
        return f"{_ARGUMENT_NAMES[indexed[1]]}[{position - 1}] (<<<{kind}_{position}>>>)"
    if wire_field == "image_list+element_list":
        return "images and element_ids together"
    return _ARGUMENT_NAMES.get(wire_field, wire_field)


def _in_tool_words(text: str) -> str:
    def swap(match: re.Match[str]) -> str:
        name = _ARGUMENT_NAMES[match[1]]
        return f"{name}=" if match[2] else f"the {name} argument"

    return _WIRE_WORD.sub(swap, text)


def _sentence(text: str) -> str:
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


def refusal_for(exc: KlingValidationError) -> ServiceError:
    """A rule's refusal as the model should read it: the tool's argument, the rule, the fix."""
    shown = repr(exc.value)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    message = _sentence(f"{_argument_for(exc.field)}={shown} is not allowed: {_in_tool_words(exc.rule)}")
    if exc.hint:
        message += " " + _sentence(_in_tool_words(exc.hint))
    return ServiceError(message)


def check_before_reading(params: CreateImageParams) -> None:
    """Refuse what needs only the counts (too many inputs, a prompt naming a missing image)."""
    images, elements = len(params.images), len(params.element_ids)
    total = images + elements
    if total > MAX_REFERENCES:
        raise ServiceError(
            f"images and element_ids together hold {total} inputs ({images} images + {elements} "
            f"elements); at most {MAX_REFERENCES} are allowed. Remove {total - MAX_REFERENCES} of them."
        )
    try:
        check_prompt_references(params.prompt, images=images, elements=elements)
    except KlingValidationError as exc:
        raise refusal_for(exc) from None


def build_create_request(
    params: CreateImageParams,
    prepared: Sequence[PreparedImage],
    *,
    external_task_id: str,
    default_callback_url: str | None,
) -> BuiltRequest:
    """The checked vendor request for ``params`` with its inputs already prepared.

    ``external_task_id`` is used when the caller gave none (the idempotency key of this create).
    Raises ``ServiceError`` (in the tool's words) for any rule the request breaks.
    """
    notes: list[str] = []
    try:
        aspect_ratio = params.aspect_ratio
        if aspect_ratio is None:
            text_only = not prepared and not params.element_ids
            if text_only and not capabilities_for(params.model).auto_aspect_for_text_only:
                aspect_ratio = TEXT_ONLY_ASPECT_RATIO
                notes.append(
                    f"aspect_ratio defaulted to {TEXT_ONLY_ASPECT_RATIO}: {params.model} needs one for "
                    "text-only prompts."
                )
            else:
                aspect_ratio = "auto"
        series = params.result_type == "series"
        request = CreateImageRequest(
            model_name=params.model,
            prompt=params.prompt,
            image_list=[ImageRef(image=p.payload) for p in prepared] or None,
            element_list=[ElementRef(element_id=e) for e in params.element_ids] or None,
            resolution=params.resolution,
            result_type=params.result_type,
            n=params.n,
            series_amount=params.series_amount if series else None,
            aspect_ratio=aspect_ratio,
            watermark_info=WatermarkInfo(enabled=params.watermark) if params.watermark is not None else None,
            callback_url=params.callback_url or default_callback_url,
            external_task_id=params.external_task_id or external_task_id,
        )
        validate_create_request(request)
        units = estimate_units(request)
    except KlingValidationError as exc:
        raise refusal_for(exc) from None
    return BuiltRequest(request=request, units=units, notes=notes)
