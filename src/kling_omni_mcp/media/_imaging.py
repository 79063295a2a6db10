"""Small Pillow helpers shared by inputs, outputs and previews (Pillow is imported lazily).

Decompression bombs: an image file of a few kilobytes can claim 30000x30000 pixels and take
gigabytes to decode. ``open_image`` reads only the header, and refuses anything above
``MAX_PIXELS`` before a single pixel is decoded. ``MAX_PIXELS`` (64 megapixels: a 48-MP phone
photo fits; decoding it as RGBA takes about 256 MB) is below Pillow's own warning threshold
(about 89 MP, ``Image.MAX_IMAGE_PIXELS``), so Pillow's ``DecompressionBombWarning`` can only
fire for images we refuse anyway, and its ``DecompressionBombError`` (over twice that) is
caught. We do not change Pillow's global limit, nor the process-wide warning filters (not
thread-safe, and this code runs in worker threads).
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING

from .errors import MediaError

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["MAX_PIXELS", "flatten_to_rgb", "has_alpha", "human_bytes", "open_image"]

MAX_PIXELS = 64_000_000


def human_bytes(n: int) -> str:
    """``12.6 MB`` (binary megabytes, written the way the vendor writes its 10 MB limit)."""
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.3g} KB"
    return f"{n / (1024 * 1024):.3g} MB"


def open_image(fp: IO[bytes] | Path, *, what: str, error: type[MediaError]) -> Image.Image:
    """Open (header only) and refuse bombs; raise ``error`` with a message naming ``what``.

    Raises ``error`` when the bytes are not an image Pillow can read, or claim too many pixels.
    The caller closes the returned image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(fp)
    except Image.DecompressionBombError:
        raise error(
            f"{what} claims an enormous size (far over {MAX_PIXELS // 1_000_000} megapixels), the mark "
            "of a decompression bomb: it was not decoded. Use a normal image."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise error(
            f"{what} is not a valid image (its data cannot be decoded): use a PNG or JPEG file."
        ) from None
    width, height = img.size
    if width * height > MAX_PIXELS:
        img.close()
        raise error(
            f"{what} is {width}x{height} px ({width * height / 1e6:.0f} megapixels); images over "
            f"{MAX_PIXELS // 1_000_000} megapixels are refused to protect memory: scale it down first."
        )
    return img


def has_alpha(img: Image.Image) -> bool:
    """True only if some pixel is actually see-through (an all-opaque alpha channel does not count)."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
        low, _high = alpha.getextrema()
        return bool(low < 255)  # type: ignore[operator]
    return False


def flatten_to_rgb(img: Image.Image) -> Image.Image:
    """RGB, transparency composited onto white, 16/32-bit grey scaled to 8 bit.

    An image already RGB is returned as is (no copy: a copy of a big image costs memory).
    """
    from PIL import Image

    if img.mode == "RGB" and "transparency" not in img.info:
        return img

    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # A plain convert("RGB") clips 16-bit values at 255, turning most images white.
        img = img.convert("I").point(lambda v: v * (1 / 256)).convert("L")
    elif img.mode == "F":
        img = img.convert("L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La", "P") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")
