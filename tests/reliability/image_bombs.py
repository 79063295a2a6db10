"""Image bombs: inputs small (or merely large) on disk that are huge once decoded.

Written once per test session (they take a few seconds of CPU to make) and shared by the
memory tests of one preparation and of six concurrent ``create_image`` calls.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Kind of bomb → file name. Each is accepted (or refused) by the server within its memory budget.
BOMB_FILES = {
    "webp-8000-lossless": "bomb-8000x8000-lossless.webp",
    "png-64mp-small": "bomb-64mp-small.png",
    "png-64mp-large": "bomb-64mp-large.png",
    "jpeg-noise-70mb": "bomb-noise-70mb.jpg",
}
_SIDE = 8000


def _write_webp(path: Path) -> None:
    from PIL import Image

    with Image.new("RGB", (_SIDE, _SIDE), (40, 90, 160)) as img:
        img.save(path, "WEBP", lossless=True, method=0)


def _gradient_rgba() -> object:
    from PIL import Image

    # A smooth gradient with alpha: 64 MP that PNG compresses to a few MB.
    ramp = Image.linear_gradient("L").resize((_SIDE, _SIDE))
    return Image.merge("RGBA", (ramp, ramp.transpose(Image.Transpose.ROTATE_90), ramp, ramp))


def _write_png_small(path: Path) -> None:
    img = _gradient_rgba()
    img.save(path, "PNG", compress_level=1)  # type: ignore[attr-defined]


def _write_png_large(path: Path) -> None:
    from PIL import Image

    # The gradient with a noisy band: over the vendor's 10 MB, so it must be re-encoded.
    img = _gradient_rgba()
    band = Image.frombytes("RGBA", (_SIDE, 1200), os.urandom(_SIDE * 1200 * 4))
    img.paste(band, (0, 0))  # type: ignore[attr-defined]
    img.save(path, "PNG", compress_level=1)  # type: ignore[attr-defined]


def _write_noise_jpeg(path: Path) -> None:
    from PIL import Image

    # Noise barely compresses: about 70 MB of baseline JPEG at quality 100, no chroma subsampling.
    size = (4800, 3600)
    img = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3))
    img.save(path, "JPEG", quality=100, subsampling=0)


_WRITERS = {
    "webp-8000-lossless": _write_webp,
    "png-64mp-small": _write_png_small,
    "png-64mp-large": _write_png_large,
    "jpeg-noise-70mb": _write_noise_jpeg,
}


def write_bombs(folder: Path) -> dict[str, Path]:
    """Write every bomb into ``folder`` (skipping ones already there); kind → path."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for kind, name in BOMB_FILES.items():
        path = folder / name
        if not path.exists():
            partial = path.with_name("partial-" + name)
            _WRITERS[kind](partial)
            partial.replace(path)
        paths[kind] = path
    return paths
