"""Every documented request rule, checked before a credit is spent.

The models and limits themselves live in ``kling.capabilities``; this module checks a
``CreateImageRequest`` against them. A request that breaks a rule is refused here with a
``KlingValidationError`` naming the wire field, the value, the rule and what to change instead
(the service renames wire fields to the tool's own argument names before the model reads them).

Longer than 300 lines on purpose: every rule with its refusal, written out, is one list a
reviewer can hold against the vendor's reference; splitting it would scatter that list.

Source: ``shared/reference/kling-api.md`` (vendor Omni-Image reference and capability map).
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from kling_omni_mcp.kling.capabilities import (
    ASPECT_RATIOS,
    DEFAULT_SERIES_AMOUNT,
    MAX_IMAGE_BYTES,
    MAX_REFERENCES,
    MODEL_CAPABILITIES,
    MODEL_NAMES,
    N_RANGE,
    PROMPT_MAX_CHARS,
    SERIES_AMOUNT_RANGE,
    SERIES_AUTO_ESTIMATE,
    ModelCapabilities,
    describe_models,
)
from kling_omni_mcp.kling.errors import KlingValidationError
from kling_omni_mcp.kling.models import CreateImageRequest

# The capability names are re-exported: ``kling.rules`` was their home before ``capabilities``.
__all__ = [
    "DEFAULT_SERIES_AMOUNT",
    "MAX_IMAGE_BYTES",
    "MAX_REFERENCES",
    "MODEL_CAPABILITIES",
    "N_RANGE",
    "PROMPT_MAX_CHARS",
    "SERIES_AMOUNT_RANGE",
    "SERIES_AUTO_ESTIMATE",
    "ModelCapabilities",
    "capabilities_for",
    "check_prompt_references",
    "describe_models",
    "estimate_units",
    "image_count",
    "models_with",
    "prompt_references",
    "validate_create_request",
]

#: Element ids are Java ``long`` values on the vendor side.
_MAX_ELEMENT_ID = 2**63 - 1

_REFERENCE = re.compile(r"<{2,3}\s*(image|element|object)_(\d+)\s*>{2,3}")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}$")
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def capabilities_for(model_name: str) -> ModelCapabilities:
    """The capabilities of ``model_name``; ``KlingValidationError`` for an unknown model."""
    caps = MODEL_CAPABILITIES.get(model_name)
    if caps is None:
        raise KlingValidationError(
            "model_name",
            model_name,
            f"must be one of {', '.join(MODEL_NAMES)}",
            hint=f"Choose one of {', '.join(MODEL_NAMES)} (the first is the default).",
        )
    return caps


def models_with(*, resolution: str | None = None, series: bool = False) -> list[str]:
    """The models that accept ``resolution`` (and series output, when asked), in map order."""
    return [
        caps.name
        for caps in MODEL_CAPABILITIES.values()
        if (resolution is None or resolution in caps.resolutions) and (caps.supports_series or not series)
    ]


def prompt_references(prompt: str) -> dict[str, set[int]]:
    """The inputs a prompt refers to: ``{"image": {1, 2}, "element": {1}, "object": set()}``.

    References are 1-based: ``<<<image_1>>>`` is the first entry of ``image_list``. The vendor's
    own examples also write ``<<image_1>>`` (two brackets), so both spellings count.
    """
    found: dict[str, set[int]] = {"image": set(), "element": set(), "object": set()}
    for kind, number in _REFERENCE.findall(prompt):
        found[kind].add(int(number))
    return found


def image_count(req: CreateImageRequest) -> int:
    """How many images the task will produce (and concurrency slots it holds).

    ``n`` for single output; ``series_amount`` for series (4 when unset, 9 for ``"auto"``: the
    most the vendor may produce, so estimates never come out low).
    """
    if req.result_type == "series":
        amount = req.series_amount
        if amount is None:
            return DEFAULT_SERIES_AMOUNT
        if amount == "auto":
            return SERIES_AUTO_ESTIMATE
        return int(amount)
    return req.n


def estimate_units(req: CreateImageRequest) -> int:
    """Units the task should cost: the model's price per image at that resolution, times the images.

    An estimate for the user: ``"auto"`` series count as 9 images (the maximum). Unknown models
    or resolutions a model does not support raise ``KlingValidationError``.
    """
    caps = capabilities_for(req.model_name)
    if req.resolution not in caps.units_per_image:
        _refuse_resolution(caps, req.resolution)
    return caps.units_for(req.resolution) * image_count(req)


def validate_create_request(req: CreateImageRequest) -> None:
    """Refuse a request that breaks any documented rule, before it is sent.

    Raises ``KlingValidationError(field, value, rule, hint=...)`` for the first broken rule.
    """
    caps = capabilities_for(req.model_name)
    _check_prompt(req.prompt)
    images = req.image_list or []
    elements = req.element_list or []
    _check_images(req)
    _check_elements(req)
    if len(images) + len(elements) > MAX_REFERENCES:
        raise KlingValidationError(
            "image_list+element_list",
            f"{len(images)} images + {len(elements)} elements",
            f"reference images and elements together must be at most {MAX_REFERENCES}",
            hint=f"Drop some references so that at most {MAX_REFERENCES} remain.",
        )
    _check_output(req, caps)
    if req.resolution not in caps.resolutions:
        _refuse_resolution(caps, req.resolution)
    if req.aspect_ratio not in ASPECT_RATIOS:
        raise KlingValidationError(
            "aspect_ratio", req.aspect_ratio, f"must be one of {', '.join(ASPECT_RATIOS)}"
        )
    if req.aspect_ratio == "auto" and not caps.auto_aspect_for_text_only and not images and not elements:
        raise KlingValidationError(
            "aspect_ratio",
            req.aspect_ratio,
            f"{caps.name} does not accept 'auto' for pure text-to-image (no reference images or elements)",
            hint="Choose an explicit aspect ratio such as 1:1 or 16:9, or give a reference image.",
        )
    check_prompt_references(req.prompt, images=len(images), elements=len(elements))
    if req.callback_url is not None:
        _check_callback_url(req.callback_url)
    if req.external_task_id and not req.external_task_id.strip():
        raise KlingValidationError(
            "external_task_id",
            req.external_task_id,
            "must not be only whitespace",
            hint="Leave it out and an id is generated, or give a visible unique id.",
        )


# --- the individual rules ------------------------------------------------------------------------


def _check_prompt(prompt: str) -> None:
    if not prompt.strip():
        raise KlingValidationError(
            "prompt", prompt, "is required and must not be empty", hint="Describe the image to create."
        )
    if len(prompt) > PROMPT_MAX_CHARS:
        raise KlingValidationError(
            "prompt",
            f"{len(prompt)} characters",
            f"must be at most {PROMPT_MAX_CHARS} characters",
            hint=f"Shorten the prompt by {len(prompt) - PROMPT_MAX_CHARS} characters.",
        )


def _check_images(req: CreateImageRequest) -> None:
    if req.image_list is None:
        return
    if not req.image_list:
        raise KlingValidationError(
            "image_list", [], "must not be an empty list", hint="Leave image_list out, or give images."
        )
    for position, ref in enumerate(req.image_list, start=1):
        _check_image(f"image_list[{position}].image", ref.image)


def _check_image(name: str, image: str) -> None:
    value = image.strip()
    if not value:
        raise KlingValidationError(name, image, "must not be empty", hint="Give an image URL or a file path.")
    lowered = value[:16].lower()
    if lowered.startswith("data:"):
        raise KlingValidationError(
            name,
            image,
            "must be a URL or bare Base64; the 'data:image/...;base64,' prefix is not accepted",
            hint="Strip the data: prefix and send only the Base64 text.",
        )
    if "://" in value[:12]:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise KlingValidationError(
                name, image, "a URL must be http:// or https:// with a host", hint="Give a public https URL."
            )
        return
    if not _BASE64.match(value) or len(value) % 4 != 0:
        raise KlingValidationError(
            name,
            image,
            "must be an http(s) URL or a bare Base64 string (A-Z a-z 0-9 + / with = padding)",
            hint="Give a public https URL, or the file's bytes Base64-encoded without line breaks.",
        )
    decoded_size = len(value) * 3 // 4 - value.count("=")
    if decoded_size > MAX_IMAGE_BYTES:
        raise KlingValidationError(
            name,
            f"{decoded_size} bytes",
            f"an input image must be at most {MAX_IMAGE_BYTES // (1024 * 1024)} MB",
            hint="Downscale or recompress the image.",
        )
    try:
        head = base64.b64decode(value[:16], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KlingValidationError(name, image, "is not valid Base64") from exc
    if not (head.startswith(_JPEG_MAGIC) or head.startswith(_PNG_MAGIC)):
        raise KlingValidationError(
            name,
            image,
            "only JPEG and PNG images are accepted",
            hint="Convert the image to PNG or JPEG first.",
        )


def _check_elements(req: CreateImageRequest) -> None:
    if req.element_list is None:
        return
    if not req.element_list:
        raise KlingValidationError(
            "element_list", [], "must not be an empty list", hint="Leave element_list out, or give elements."
        )
    for position, ref in enumerate(req.element_list, start=1):
        element_id = ref.element_id
        if isinstance(element_id, bool) or not 0 < element_id <= _MAX_ELEMENT_ID:
            raise KlingValidationError(
                f"element_list[{position}].element_id",
                element_id,
                "must be a positive 64-bit integer id from the element library",
                hint="Copy the element id from the Kling element library.",
            )


def _check_output(req: CreateImageRequest, caps: ModelCapabilities) -> None:
    low, high = N_RANGE
    if isinstance(req.n, bool) or not low <= req.n <= high:
        raise KlingValidationError("n", req.n, f"must be between {low} and {high}")
    if req.result_type == "series":
        if not caps.supports_series:
            raise KlingValidationError(
                "result_type",
                "series",
                f"{caps.name} does not support series output",
                hint=f"Use model_name={' or '.join(models_with(series=True))} for a series, or "
                "result_type='single' with n images.",
            )
        if req.n != 1:
            # The vendor ignores n for a series; refusing beats a silent surprise.
            raise KlingValidationError(
                "n",
                req.n,
                "is ignored for result_type='series'",
                hint=f"Set series_amount ({SERIES_AMOUNT_RANGE[0]}-{SERIES_AMOUNT_RANGE[1]} or 'auto') for "
                "the number of series images and leave n at 1.",
            )
        amount = req.series_amount
        low, high = SERIES_AMOUNT_RANGE
        if (
            amount is not None
            and amount != "auto"
            and (isinstance(amount, bool) or not low <= amount <= high)
        ):
            raise KlingValidationError(
                "series_amount", amount, f"must be between {low} and {high}, or 'auto'"
            )
    elif req.result_type == "single":
        if req.series_amount is not None:
            raise KlingValidationError(
                "series_amount",
                req.series_amount,
                "is only allowed with result_type='series'",
                hint="Set result_type='series', or use n for several independent images.",
            )
    else:
        raise KlingValidationError("result_type", req.result_type, "must be 'single' or 'series'")


def _refuse_resolution(caps: ModelCapabilities, resolution: str) -> None:
    others = [name for name in models_with(resolution=resolution) if name != caps.name]
    better = f", or use {' or '.join(others)} for {resolution}" if others else ""
    raise KlingValidationError(
        "resolution",
        resolution,
        f"{caps.name} supports {', '.join(caps.resolutions)}",
        hint=f"Choose one of {', '.join(caps.resolutions)}{better}.",
    )


def check_prompt_references(prompt: str, *, images: int, elements: int) -> None:
    """Refuse references past the inputs given: ``<<<image_3>>>`` with 2 images, or a 0 index.

    ``<<<element_N>>>`` and ``<<<object_N>>>`` both count against the elements (the vendor's own
    example calls its one element ``<<<object_1>>>``). Callers may run this before reading any
    input file, since it needs only the counts.
    """
    refs = prompt_references(prompt)
    for kind, numbers in refs.items():
        if 0 in numbers:
            raise KlingValidationError(
                "prompt",
                f"<<<{kind}_0>>>",
                "references are 1-based",
                hint=f"Write <<<{kind}_1>>> for the first {kind}.",
            )
    given = {"image": (images, "image_list", "images"), "element": (elements, "element_list", "elements")}
    given["object"] = given["element"]
    for kind, numbers in refs.items():
        count, list_name, noun = given[kind]
        if numbers and max(numbers) > count:
            raise KlingValidationError(
                "prompt",
                f"<<<{kind}_{max(numbers)}>>>",
                f"refers to {kind} {max(numbers)} but only {count} {noun} were given in {list_name}",
                hint=f"Add the missing {noun} to {list_name}, or refer only to {kind}_1..{kind}_{count}."
                if count
                else f"Add {noun} to {list_name}, or remove the reference from the prompt.",
            )


def _check_callback_url(url: str) -> None:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise KlingValidationError(
            "callback_url",
            url,
            "must be an http:// or https:// URL with a host",
            hint="Give a public https URL the vendor can POST to, or leave callback_url out.",
        )
