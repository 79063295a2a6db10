"""Inline previews: they fit the host's budget for 1, 4 and 9 images, and shrink as they must."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from pathlib import Path

import pytest

from kling_omni_mcp.media import make_preview, preview_budget

ImageMaker = Callable[..., Path]


@pytest.mark.parametrize(
    ("n", "cap", "expected_side"),
    [
        (1, 512, 512),
        (2, 512, 384),
        (4, 512, 384),
        (5, 512, 256),
        (9, 512, 256),
        (20, 512, 128),
        (1, 200, 200),
    ],
)
def test_budget_side_shrinks_with_the_count_and_respects_the_cap(
    n: int, cap: int, expected_side: int
) -> None:
    side, max_bytes = preview_budget(n, max_side_cap=cap)
    assert side == expected_side
    # n Base64 strings of max_bytes each fit in the total.
    assert n * 4 * -(-max_bytes // 3) <= 60_000


@pytest.mark.parametrize(("n", "cap"), [(0, 512), (3, 0)])
def test_budget_is_zero_when_there_is_nothing_to_show(n: int, cap: int) -> None:
    assert preview_budget(n, max_side_cap=cap) == (0, 0)


@pytest.mark.parametrize("n", [1, 4, 9])
def test_all_previews_of_an_answer_fit_the_total_budget(make_image: ImageMaker, n: int) -> None:
    # Noise is the worst case for JPEG: if noise fits, pictures fit.
    paths = [make_image(f"r{i}.png", (1024, 768), noise=True) for i in range(n)]
    side, max_bytes = preview_budget(n, max_side_cap=512, total_chars=60_000)
    previews = [make_preview(p, max_side=side, max_bytes=max_bytes) for p in paths]
    assert all(p is not None for p in previews)
    total = sum(len(base64.b64encode(p.data)) for p in previews if p is not None)
    assert total <= 60_000
    for preview in previews:
        assert preview is not None
        assert max(preview.width, preview.height) <= side
        assert preview.mime_type == "image/jpeg" and preview.data[:3] == b"\xff\xd8\xff"


def test_a_small_budget_shrinks_the_side_and_keeps_the_shape(make_image: ImageMaker) -> None:
    from PIL import Image

    path = make_image("r.png", (1200, 600), noise=True)
    preview = make_preview(path, max_side=512, max_bytes=4_000)
    assert preview is not None and len(preview.data) <= 4_000
    assert preview.width < 512 and preview.width == 2 * preview.height
    with Image.open(io.BytesIO(preview.data)) as img:
        assert img.size == (preview.width, preview.height)


def test_transparency_is_flattened_onto_white(make_image: ImageMaker) -> None:
    from PIL import Image

    path = make_image("clear.png", (400, 400), mode="RGBA", color=(0, 0, 0, 0))
    preview = make_preview(path, max_side=128, max_bytes=10_000)
    assert preview is not None
    with Image.open(io.BytesIO(preview.data)) as img:
        assert img.mode == "RGB" and min(img.getpixel((64, 64))) >= 250  # type: ignore[arg-type]


@pytest.mark.parametrize(("max_side", "max_bytes"), [(0, 10_000), (512, 0), (512, 200)])
def test_no_preview_when_it_is_off_or_cannot_fit(
    make_image: ImageMaker, max_side: int, max_bytes: int
) -> None:
    path = make_image("r.png", (800, 800), noise=True)
    assert make_preview(path, max_side=max_side, max_bytes=max_bytes) is None


def test_an_unreadable_file_gives_no_preview_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert make_preview(path, max_side=256, max_bytes=10_000) is None
