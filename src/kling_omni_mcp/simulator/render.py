"""Result images: real PNG files whose size follows the request's resolution and aspect ratio.

Each (task, index) gets its own colours and shapes from a hash of the task id, so a test or a
person can tell results apart. Only whole-image Pillow operations are used (no per-pixel Python
loops): a 4k image renders in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction

import anyio.to_thread

from .contract import RESOLUTION_LONG_SIDE

__all__ = ["RenderCache", "render_png", "result_size"]

_MIN_SIDE = 8


def result_size(
    resolution: str,
    aspect_ratio: str,
    *,
    first_input: tuple[int, int] | None = None,
    scale: float = 1.0,
) -> tuple[int, int]:
    """Width and height of a result image.

    The long side is 1024/2048/4096 px for 1k/2k/4k, times ``scale``. ``auto`` follows the first
    input image's ratio when it is known (Base64 inputs), else 1:1.
    """
    long_side = max(_MIN_SIDE, round(RESOLUTION_LONG_SIDE[resolution] * scale))
    if aspect_ratio == "auto":
        ratio = Fraction(*first_input) if first_input else Fraction(1)
    else:
        w, h = aspect_ratio.split(":")
        ratio = Fraction(int(w), int(h))
    if ratio >= 1:
        return long_side, max(_MIN_SIDE, round(long_side / ratio))
    return max(_MIN_SIDE, round(long_side * ratio)), long_side


def _palette(digest: bytes) -> list[tuple[int, int, int]]:
    return [(digest[i], digest[i + 1], digest[i + 2]) for i in range(0, 24, 3)]


def render_png(seed: str, index: int, size: tuple[int, int], *, watermark: bool = False) -> bytes:
    """A PNG of ``size`` that looks different for each ``seed``/``index``; optionally watermarked."""
    # Imported here: Pillow is only needed once a result is downloaded, not to start serving.
    from PIL import Image, ImageDraw

    width, height = size
    digest = hashlib.sha512(f"{seed}/{index}".encode()).digest()
    colors = _palette(digest)
    # A diagonal gradient between two colours, built from Pillow's 256x256 ramp and resized.
    ramp = Image.linear_gradient("L").rotate(45, expand=False).resize((width, height))
    image = Image.composite(Image.new("RGB", size, colors[0]), Image.new("RGB", size, colors[1]), ramp)
    draw = ImageDraw.Draw(image)
    unit = min(width, height)
    for shape in range(4):
        x = digest[32 + shape] / 255 * width
        y = digest[40 + shape] / 255 * height
        r = unit * (0.08 + digest[48 + shape] / 255 * 0.2)
        box = (x - r, y - r, x + r, y + r)
        if shape % 2:
            draw.ellipse(box, fill=colors[2 + shape])
        else:
            draw.rectangle(box, fill=colors[2 + shape])
    # The index as a row of bars, so images of one task differ visibly too.
    bar = max(2, unit // 40)
    for i in range(index + 1):
        draw.rectangle((bar * (1 + 2 * i), bar, bar * (2 + 2 * i), bar * 6), fill=(255, 255, 255))
    if watermark:
        band = max(4, height // 12)
        draw.rectangle((0, height - band, width, height), fill=(0, 0, 0))
        draw.text((band // 2, height - band + band // 4), "KLING SIMULATOR", fill=(255, 255, 255))
    out = io.BytesIO()
    # compress_level=1: large flat images compress well anyway, and rendering stays fast.
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


class RenderCache:
    """Rendered files by key, rendered once on first use in a worker thread, oldest dropped first.

    A threading lock (not an asyncio one) guards rendering, so the cache works from any event
    loop, and two downloads of the same image never render it twice.
    """

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._files: OrderedDict[tuple[str, int, bool], bytes] = OrderedDict()
        self._lock = threading.Lock()

    async def get(self, key: tuple[str, int, bool], produce: Callable[[], bytes]) -> bytes:
        """The file for ``key``, from the cache or from ``produce()`` (run off the event loop)."""
        cached = self._files.get(key)
        if cached is not None:
            return cached
        return await anyio.to_thread.run_sync(self._get_or_render, key, produce)

    def _get_or_render(self, key: tuple[str, int, bool], produce: Callable[[], bytes]) -> bytes:
        with self._lock:
            cached = self._files.get(key)
            if cached is not None:
                return cached
            data = produce()
            if self._entries > 0:
                self._files[key] = data
                while len(self._files) > self._entries:
                    self._files.popitem(last=False)
            return data

    def clear(self) -> None:
        """Forget every rendered file."""
        with self._lock:
            self._files.clear()
