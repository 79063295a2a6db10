"""The process-wide decode limiter: at most two images decoded at once, inputs and previews alike."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kling_omni_mcp.media import decoding, previews
from kling_omni_mcp.media.decoding import MAX_CONCURRENT_DECODES, decode_slot
from kling_omni_mcp.media.errors import InputImageError, MediaError
from kling_omni_mcp.media.inputs import prepare_image_input
from kling_omni_mcp.media.previews import make_preview

CALLERS = 8
# Each decode is held open this long, so callers that are let through really overlap.
DECODE_HOLD_SECONDS = 0.15


@pytest.fixture
def count_concurrent_decodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Watch Pillow's ``ImageFile.load`` (every decode goes through it): how many run at once."""
    from PIL import ImageFile

    seen = {"now": 0, "most": 0, "total": 0}
    lock = threading.Lock()
    real_load = ImageFile.ImageFile.load

    def watched_load(self: Any) -> Any:
        with lock:
            seen["now"] += 1
            seen["total"] += 1
            seen["most"] = max(seen["most"], seen["now"])
        try:
            time.sleep(DECODE_HOLD_SECONDS)
            return real_load(self)
        finally:
            with lock:
                seen["now"] -= 1

    monkeypatch.setattr(ImageFile.ImageFile, "load", watched_load)
    return seen


def test_at_most_two_decodes_run_at_once_across_inputs_and_previews(
    tmp_path: Path, encode_image: Callable[..., bytes], count_concurrent_decodes: dict[str, int]
) -> None:
    webp = encode_image((400, 400), fmt="WEBP")
    png_file = tmp_path / "result.png"
    png_file.write_bytes(encode_image((400, 400), fmt="PNG"))
    data_uri = "data:image/webp;base64," + base64.b64encode(webp).decode()
    errors: list[BaseException] = []

    def prepare() -> None:
        try:
            got = prepare_image_input(data_uri, allowed_dirs=[tmp_path])
            assert got.converted and got.width == 400
        except BaseException as exc:  # reported below, in the test's own thread
            errors.append(exc)

    def preview() -> None:
        if make_preview(png_file, max_side=128, max_bytes=20_000) is None:
            errors.append(AssertionError("no preview"))

    workers = [threading.Thread(target=prepare if i % 2 else preview) for i in range(CALLERS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert not errors, errors
    assert count_concurrent_decodes["total"] >= CALLERS
    assert count_concurrent_decodes["most"] == MAX_CONCURRENT_DECODES == 2


def test_inputs_and_previews_share_the_slots_and_say_when_busy(
    tmp_path: Path, encode_image: Callable[..., bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decoding, "SLOT_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(previews, "_SLOT_WAIT_SECONDS", 0.3)
    image = tmp_path / "photo.png"
    image.write_bytes(encode_image((400, 400), fmt="PNG"))
    with decode_slot(MediaError), decode_slot(MediaError):  # both slots taken elsewhere
        with pytest.raises(InputImageError, match=r"busy preparing other images .* try again"):
            prepare_image_input(str(image), allowed_dirs=[tmp_path])
        assert make_preview(image, max_side=128, max_bytes=20_000) is None
    # Freed: both work again.
    assert prepare_image_input(str(image), allowed_dirs=[tmp_path]).width == 400
    assert make_preview(image, max_side=128, max_bytes=20_000) is not None
