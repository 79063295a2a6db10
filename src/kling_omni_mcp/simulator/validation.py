"""Check a create body against the vendor's rules and turn it into a ``CreateSpec``.

Every refusal is ``ApiError(400, 1201, "<field>: <rule> (got <value>)")`` so a caller (a person or
a model) sees which field to change and how; a body that is not a JSON object is 1200. Input
images given as Base64 are decoded and measured with Pillow; URLs are accepted without a fetch.

Longer than 300 lines on purpose: it is the vendor's field table written as one small check per
field, read top to bottom by ``validate_create``; a reviewer holds it against the reference in
one pass, and splitting it by field would scatter that one list (as for ``kling.rules``).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

from . import contract as c
from .body import parse_json_body
from .envelope import ApiError

__all__ = ["CreateSpec", "InputImage", "parse_json_body", "validate_create"]

# Pillow refuses images past 2x this many pixels; our own limit is far below that, so a small
# Base64 "decompression bomb" header is refused before any pixel is decoded.
_MAX_INPUT_PIXELS = 100_000_000
_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Base64 of MAX_IMAGE_BYTES, plus padding slack: anything longer cannot decode to an allowed size.
_MAX_BASE64_CHARS = (c.MAX_IMAGE_BYTES + 2) // 3 * 4 + 4


@dataclass(frozen=True)
class InputImage:
    """One accepted ``image_list`` entry; sizes are known only for Base64 inputs."""

    kind: str  # "url" or "base64"
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class CreateSpec:
    """A create request that passed every rule, with defaults filled in."""

    prompt: str
    model_name: str = c.DEFAULT_MODEL
    resolution: str = "1k"
    result_type: str = "single"
    n: int = 1
    series_amount: int = c.DEFAULT_SERIES_AMOUNT
    aspect_ratio: str = "auto"
    images: tuple[InputImage, ...] = ()
    element_ids: tuple[int, ...] = ()
    watermark_enabled: bool | None = None
    callback_url: str | None = None
    external_task_id: str | None = None
    series_amount_requested: int | str | None = field(default=None)

    @property
    def image_count(self) -> int:
        """How many result images the task produces."""
        return self.series_amount if self.result_type == "series" else self.n


def _bad(field_name: str, rule: str, value: object = None, *, code: int = 1201) -> ApiError:
    shown = ""
    if value is not None:
        text = repr(value)
        shown = f" (got {text[:60] + '...' if len(text) > 60 else text})"
    return ApiError(400, code, f"{field_name}: {rule}{shown}")


def _type_name(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _enum(body: dict[str, Any], name: str, allowed: tuple[str, ...], default: str) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise _bad(name, f"must be a string, one of {', '.join(allowed)}; got a {_type_name(value)}")
    if value not in allowed:
        raise _bad(name, f"must be one of {', '.join(allowed)}", value)
    return value


def _int_in(body: dict[str, Any], name: str, bounds: tuple[int, int], default: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, f"must be an integer from {low} to {high}; got a {_type_name(value)}", value)
    if not low <= value <= high:
        raise _bad(name, f"must be from {low} to {high}", value)
    return value


def _prompt(body: dict[str, Any]) -> str:
    value = body.get("prompt")
    if value is None:
        raise _bad("prompt", "is required: describe the image to generate")
    if not isinstance(value, str):
        raise _bad("prompt", f"must be a string; got a {_type_name(value)}")
    if not value.strip():
        raise _bad("prompt", "must not be empty")
    if len(value) > c.MAX_PROMPT_CHARS:
        raise _bad("prompt", f"must not exceed {c.MAX_PROMPT_CHARS} characters (got {len(value)})")
    return value


def _series_amount(body: dict[str, Any]) -> tuple[int, int | str | None]:
    value = body.get("series_amount")
    if value is None:
        return c.DEFAULT_SERIES_AMOUNT, None
    if value == "auto":
        # The vendor decides how many; the simulator always picks the default, 4.
        return c.DEFAULT_SERIES_AMOUNT, "auto"
    low, high = c.SERIES_AMOUNT_RANGE
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad("series_amount", f'must be an integer from {low} to {high} or "auto"', value)
    if not low <= value <= high:
        raise _bad("series_amount", f'must be from {low} to {high} or "auto"', value)
    return value, value


def _measure_base64(name: str, text: str) -> InputImage:
    # Imported here: Pillow is only needed once an image arrives, not to start serving.
    from PIL import Image

    if len(text) > _MAX_BASE64_CHARS:
        raise _bad(name, f"decoded image must not exceed {c.MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(
            name, "must be an http(s) URL or a bare Base64 string; it is neither (invalid Base64)"
        ) from None
    if len(data) > c.MAX_IMAGE_BYTES:
        raise _bad(name, f"decoded image must not exceed {c.MAX_IMAGE_BYTES // (1024 * 1024)} MB")
    if not (data.startswith(_PNG_MAGIC) or data.startswith(_JPEG_MAGIC)):
        raise _bad(name, "must be a PNG or JPEG image (jpg/jpeg/png only)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=("PNG", "JPEG")) as img:
                width, height = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bad(name, "image has far too many pixels") from None
    except Exception:  # any decoder failure means "not a readable image"
        raise _bad(name, "is not a readable PNG or JPEG image") from None
    if width * height > _MAX_INPUT_PIXELS:
        raise _bad(name, "image has far too many pixels", f"{width}x{height}")
    if min(width, height) < c.MIN_IMAGE_SIDE:
        raise _bad(name, f"each side must be at least {c.MIN_IMAGE_SIDE} px", f"{width}x{height}")
    if max(width, height) / min(width, height) > c.MAX_IMAGE_RATIO:
        raise _bad(name, "aspect ratio must be between 1:2.5 and 2.5:1", f"{width}x{height}")
    return InputImage("base64", width, height)


def _image(index: int, entry: object) -> InputImage:
    where = f"image_list[{index}]"
    if not isinstance(entry, dict):
        raise _bad(where, f'must be an object {{"image": "<URL or Base64>"}}; got a {_type_name(entry)}')
    extra = sorted(set(entry) - {"image"})
    if extra:
        raise _bad(where, f"unknown field {extra[0]!r}: only 'image' is allowed")
    name = f"{where}.image"
    value = entry.get("image")
    if value is None:
        raise _bad(name, "is required")
    if not isinstance(value, str):
        raise _bad(name, f"must be a string (URL or Base64); got a {_type_name(value)}")
    if not value.strip():
        raise _bad(name, "must not be empty")
    lowered = value[:16].lower()
    if lowered.startswith("data:"):
        raise _bad(name, "must be bare Base64: remove the 'data:image/...;base64,' prefix")
    if lowered.startswith(("http://", "https://")):
        if not _URL.match(value):
            raise _bad(name, "is not a valid http(s) URL", value)
        return InputImage("url")
    if re.match(r"^[a-z][a-z0-9+.-]*://", lowered):
        raise _bad(name, "URL must use http or https", value)
    return _measure_base64(name, value)


def _images(body: dict[str, Any]) -> tuple[InputImage, ...]:
    value = body.get("image_list")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad("image_list", f"must be an array of {{'image': ...}} objects; got a {_type_name(value)}")
    if len(value) > c.MAX_REFERENCES:
        raise _bad("image_list", f"must hold at most {c.MAX_REFERENCES} images (got {len(value)})")
    return tuple(_image(i, entry) for i, entry in enumerate(value))


def _elements(body: dict[str, Any]) -> tuple[int, ...]:
    value = body.get("element_list")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _bad(
            "element_list", f"must be an array of {{'element_id': ...}} objects; got a {_type_name(value)}"
        )
    if len(value) > c.MAX_REFERENCES:
        raise _bad("element_list", f"must hold at most {c.MAX_REFERENCES} elements (got {len(value)})")
    ids: list[int] = []
    for i, entry in enumerate(value):
        where = f"element_list[{i}]"
        if not isinstance(entry, dict):
            raise _bad(where, f"must be an object {{'element_id': <integer>}}; got a {_type_name(entry)}")
        extra = sorted(set(entry) - {"element_id"})
        if extra:
            raise _bad(where, f"unknown field {extra[0]!r}: only 'element_id' is allowed")
        element_id = entry.get("element_id")
        name = f"{where}.element_id"
        if element_id is None:
            raise _bad(name, "is required")
        if isinstance(element_id, bool) or not isinstance(element_id, int):
            # A float would have lost digits already; a string is not the documented type.
            raise _bad(name, f"must be a JSON integer (64-bit); got a {_type_name(element_id)}", element_id)
        if not 1 <= element_id <= c.ELEMENT_ID_MAX:
            raise _bad(name, "must be a positive 64-bit integer", element_id)
        ids.append(element_id)
    return tuple(ids)


def _watermark(body: dict[str, Any]) -> bool | None:
    value = body.get("watermark_info")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad(
            "watermark_info", f'must be an object {{"enabled": true|false}}; got a {_type_name(value)}'
        )
    extra = sorted(set(value) - {"enabled"})
    if extra:
        raise _bad("watermark_info", f"unknown field {extra[0]!r}: only 'enabled' is allowed")
    enabled = value.get("enabled")
    if not isinstance(enabled, bool):
        raise _bad("watermark_info.enabled", f"must be true or false; got a {_type_name(enabled)}", enabled)
    return enabled


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _bad(name, f"must be a string; got a {_type_name(value)}", value)
    # The vendor's own example sends "" for both optional strings: read it as "not given".
    return value or None


def _check_capabilities(spec: CreateSpec) -> None:
    model = spec.model_name
    if spec.resolution not in c.MODEL_RESOLUTIONS[model]:
        allowed = ", ".join(c.MODEL_RESOLUTIONS[model])
        raise _bad(
            "resolution",
            f"{spec.resolution!r} is not supported by {model}: use {allowed}, or model_name kling-v3-omni",
        )
    if spec.result_type == "series" and not c.MODEL_SERIES[model]:
        raise _bad(
            "result_type",
            f"'series' is not supported by {model}: use result_type 'single', or model_name kling-v3-omni",
        )
    text_only = not spec.images and not spec.element_ids
    if model == "kling-v3-omni" and spec.aspect_ratio == "auto" and text_only:
        fixed = ", ".join(r for r in c.ASPECT_RATIOS if r != "auto")
        raise _bad(
            "aspect_ratio",
            f"'auto' (also the default when aspect_ratio is omitted) is not supported by {model} for "
            f"text-to-image without image_list or element_list: set aspect_ratio to one of {fixed}",
        )


def validate_create(body: object) -> CreateSpec:
    """Check a parsed create body against every documented rule; raise ``ApiError`` on the first break."""
    if not isinstance(body, dict):
        raise ApiError(400, 1200, f"request body must be a JSON object; got a {_type_name(body)}")
    unknown = sorted(set(body) - c.FIELDS)
    if unknown:
        raise _bad(unknown[0], f"is not a field of this API (allowed: {', '.join(sorted(c.FIELDS))})")
    prompt = _prompt(body)
    model_name = _enum(body, "model_name", c.MODEL_NAMES, c.DEFAULT_MODEL)
    resolution = _enum(body, "resolution", c.RESOLUTIONS, "1k")
    result_type = _enum(body, "result_type", c.RESULT_TYPES, "single")
    aspect_ratio = _enum(body, "aspect_ratio", c.ASPECT_RATIOS, "auto")
    n = _int_in(body, "n", c.N_RANGE, 1)
    series_amount, requested = _series_amount(body)
    images = _images(body)
    element_ids = _elements(body)
    if len(images) + len(element_ids) > c.MAX_REFERENCES:
        raise _bad(
            "image_list",
            f"image_list and element_list together must hold at most {c.MAX_REFERENCES} "
            f"references (got {len(images)} images + {len(element_ids)} elements)",
        )
    watermark = _watermark(body)
    callback_url = _optional_string(body, "callback_url")
    if callback_url is not None and not _URL.match(callback_url):
        raise _bad("callback_url", "must be an http(s) URL", callback_url)
    external_task_id = _optional_string(body, "external_task_id")
    spec = CreateSpec(
        prompt=prompt,
        model_name=model_name,
        resolution=resolution,
        result_type=result_type,
        n=n,
        series_amount=series_amount,
        aspect_ratio=aspect_ratio,
        images=images,
        element_ids=element_ids,
        watermark_enabled=watermark,
        callback_url=callback_url,
        external_task_id=external_task_id,
        series_amount_requested=requested,
    )
    _check_capabilities(spec)
    return spec
