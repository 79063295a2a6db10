"""Bytes of an input image → a payload the vendor accepts: checked, passed through or re-encoded.

The vendor accepts only JPEG/PNG, at most 10 MB, each side at least 300 px, aspect ratio between
1:2.5 and 2.5:1 (``shared/reference/kling-api.md``). We check all of that locally, before any
credit is spent, and fix only what can be fixed without changing the picture's content:
other formats are converted and oversized files re-encoded or scaled down (each said in
``note``). Too-small or too-elongated images are refused, never upscaled or cropped silently.
Decoding is bounded in memory (``decoding``); where the bytes come from is ``inputs``' job.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from kling_omni_mcp.kling.capabilities import MAX_IMAGE_BYTES

from ._imaging import flatten_to_rgb, has_alpha, human_bytes, open_image
from .decoding import MEMORY_BUDGET_BYTES, load_bounded, verify_decodes
from .errors import InputImageError
from .sniff import Sniffed, sniff

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "HARD_MAX_INPUT_BYTES",
    "MAX_ASPECT_RATIO",
    "MAX_INPUT_BYTES",
    "MIN_SIDE",
    "PreparedImage",
    "conform_image_bytes",
    "too_big_message",
]

#: The vendor's per-image limit (written once, in the capability map).
MAX_INPUT_BYTES = MAX_IMAGE_BYTES
#: Larger files are refused outright rather than read into memory and re-encoded.
HARD_MAX_INPUT_BYTES = 100 * 1024 * 1024
MIN_SIDE = 300
MAX_ASPECT_RATIO = 2.5

_ACCEPTED = "PNG or JPEG (WEBP, GIF, BMP and TIFF are converted automatically)"
# Re-encoding plan for files over the limit: quality steps at full size, then shrink steps.
_FULL_SIZE_QUALITIES = (90, 85, 75, 65)
_SHRUNK_QUALITY = 80
_SHRINK_FACTOR = 0.8
_MAX_SHRINK_STEPS = 12
_CONVERT_JPEG_QUALITY = 90
# Memory per working pixel while re-encoding: the RGB image, its flattened and resized copies
# (4 bytes a pixel each) and the encoded output with its copy. Sets how large an image is
# decoded for re-encoding; larger ones are decoded at a reduced scale.
_REENCODE_BYTES_PER_PIXEL = 24


@dataclass(frozen=True, slots=True)
class PreparedImage:
    """One input, ready for ``image_list[].image``; everything but ``payload`` is for people."""

    payload: str
    source_kind: Literal["url", "file", "base64"]
    source: str
    mime_type: str | None
    width: int | None
    height: int | None
    byte_size: int  # 0 for URLs: they are not fetched
    converted: bool
    note: str | None = None


def too_big_message(what: str, size: int) -> str:
    """The refusal of an input of ``size`` bytes, over ``HARD_MAX_INPUT_BYTES``."""
    return (
        f"{what} is {human_bytes(size)}; files over {human_bytes(HARD_MAX_INPUT_BYTES)} are refused (the "
        f"service takes at most {human_bytes(MAX_INPUT_BYTES)}): resize or compress it first."
    )


def conform_image_bytes(
    data: bytes, source_kind: Literal["file", "base64"], what: str, *, max_bytes: int
) -> PreparedImage:
    """Check ``data`` (an image the vendor can take?) and pass it through or re-encode it.

    The caller holds a decode slot (``decoding.decode_slot``). Raises ``InputImageError``.
    """
    source = what if source_kind == "file" else f"inline base64 ({len(data)} bytes)"
    if not data:
        raise InputImageError(f"{what} is empty (0 bytes): give a PNG or JPEG image.")
    if len(data) > HARD_MAX_INPUT_BYTES:
        raise InputImageError(too_big_message(what, len(data)))
    found = sniff(data)
    if not found.is_image:
        if found.kind == "svg":
            raise InputImageError(
                f"{what} is an SVG vector image, which the service cannot read: export it as PNG."
            )
        raise InputImageError(
            f"{what} is not an image (it looks like {found.label}): give a {_ACCEPTED} image."
        )
    if found.kind in ("heif", "avif") and not _pillow_reads(data):
        raise InputImageError(
            f"{what} is {found.label}, which this server cannot read (no decoder installed): "
            "export it as JPEG."
        )
    passthrough = found.kind in ("png", "jpeg") and len(data) <= max_bytes
    # The file's bytes, and for a pass-through their Base64 payload, are held throughout.
    held = len(data) + (len(data) * 4 // 3 if passthrough else 0)
    img = open_image(io.BytesIO(data), what=what, error=InputImageError)
    with img:
        width, height = img.size
        _check_dimensions(what, width, height)
        try:
            if passthrough:
                verify_decodes(img, what=what, error=InputImageError, held_bytes=held)
                work = img
            else:
                max_pixels = max(
                    MIN_SIDE * MIN_SIDE, (MEMORY_BUDGET_BYTES - held) // _REENCODE_BYTES_PER_PIXEL
                )
                work = load_bounded(
                    img,
                    what=what,
                    error=InputImageError,
                    held_bytes=held,
                    max_pixels=max_pixels,
                    min_side=MIN_SIDE,
                )
        except InputImageError:
            raise
        except Exception:  # any failure decoding untrusted bytes means "damaged"
            raise InputImageError(
                f"{what} is not a valid image: its {found.label} data is damaged or cut off. "
                "Use another copy."
            ) from None
        if passthrough:
            return PreparedImage(
                payload=base64.b64encode(data).decode("ascii"),
                source_kind=source_kind,
                source=source,
                mime_type=found.mime,
                width=width,
                height=height,
                byte_size=len(data),
                converted=False,
            )
        with work:
            encoded, mime, size, note = _reencode(work, found, len(data), max_bytes, what)
        if work.size != (width, height):
            note += f" (decoded at {work.width}x{work.height} from {width}x{height} to bound memory)"
    return PreparedImage(
        payload=base64.b64encode(encoded).decode("ascii"),
        source_kind=source_kind,
        source=source,
        mime_type=mime,
        width=size[0],
        height=size[1],
        byte_size=len(encoded),
        converted=True,
        note=note,
    )


def _pillow_reads(data: bytes) -> bool:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)):
            return True
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return False


def _check_dimensions(what: str, width: int, height: int) -> None:
    if min(width, height) < MIN_SIDE:
        raise InputImageError(
            f"{what} is {width}x{height} px; each side must be at least {MIN_SIDE} px: upscale it or use a "
            "larger image."
        )
    long_side, short_side = max(width, height), min(width, height)
    # Integer comparison: exactly 2.5:1 (e.g. 300x750) is allowed.
    if long_side * 2 > short_side * 5:
        ratio = f"1:{height / width:.2f}" if height > width else f"{width / height:.2f}:1"
        raise InputImageError(
            f"{what} is {width}x{height} px (aspect ratio {ratio}); the ratio must be between 1:2.5 and "
            "2.5:1: crop it to fit."
        )


def _encode(img: Image.Image, fmt: Literal["PNG", "JPEG"], quality: int = _CONVERT_JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", compress_level=6)
    else:
        img.save(buf, "JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def _reencode(
    img: Image.Image, found: Sniffed, original_size: int, max_bytes: int, what: str
) -> tuple[bytes, str, tuple[int, int], str]:
    """Convert a non-PNG/JPEG image, or shrink one over ``max_bytes``; the note says what was done."""
    from PIL import Image, ImageOps

    # EXIF is dropped, so apply its rotation first (in place: a copy of a big image costs memory).
    ImageOps.exif_transpose(img, in_place=True)
    oriented = img
    alpha = has_alpha(oriented)
    needs_conversion = found.kind not in ("png", "jpeg")
    if needs_conversion:
        if alpha:
            data = _encode(oriented, "PNG")
            if len(data) <= max_bytes:
                return data, "image/png", oriented.size, f"converted {found.label} to PNG (kept transparency)"
        else:
            rgb = flatten_to_rgb(oriented)
            data = _encode(rgb, "JPEG")
            if len(data) <= max_bytes:
                note = f"converted {found.label} to JPEG quality {_CONVERT_JPEG_QUALITY}"
                return data, "image/jpeg", rgb.size, note

    # Too large: JPEG at decreasing quality, then smaller sizes, never a side under MIN_SIDE.
    rgb = flatten_to_rgb(oriented)
    flattened = "; transparency flattened onto white" if alpha else ""
    verb = f"converted {found.label} and re-encoded" if needs_conversion else f"re-encoded {found.label}"
    limit = human_bytes(max_bytes)
    for quality in _FULL_SIZE_QUALITIES:
        data = _encode(rgb, "JPEG", quality)
        if len(data) <= max_bytes:
            note = (
                f"{verb} ({human_bytes(original_size)}) as JPEG quality {quality} to fit {limit}{flattened}"
            )
            return data, "image/jpeg", rgb.size, note
    width, height = rgb.size
    floor = MIN_SIDE / min(width, height)
    scale = 1.0
    for _ in range(_MAX_SHRINK_STEPS):
        scale = max(scale * _SHRINK_FACTOR, floor)
        size = (max(MIN_SIDE, round(width * scale)), max(MIN_SIDE, round(height * scale)))
        smaller = rgb.resize(size, Image.Resampling.LANCZOS)
        data = _encode(smaller, "JPEG", _SHRUNK_QUALITY)
        if len(data) <= max_bytes:
            note = (
                f"scaled down from {width}x{height} to {size[0]}x{size[1]} and re-encoded {found.label} "
                f"({human_bytes(original_size)}) as JPEG quality {_SHRUNK_QUALITY} to fit {limit}{flattened}"
            )
            return data, "image/jpeg", size, note
        if scale <= floor:
            break
    raise InputImageError(
        f"{what} ({width}x{height} px, {human_bytes(original_size)}) cannot be made to fit {limit} "
        f"without a side under {MIN_SIDE} px: compress or resize it yourself."
    )
