"""Input preparation: a large reference image from disk → the payload ``create_image`` sends.

Two files a user may well pass: a 20-megapixel PNG (5472x3648, photo-sized and noisy, so about
50 MB: over the vendor's 10 MB limit, so it is re-encoded) and a 9 MB JPEG (sent as it is, after
a full decode that proves it is not damaged). Baseline: just reading the file and Base64-encoding
it, which is the least any server must do. Every run is a fresh child process, so its peak
resident memory (``VmHWM``) belongs to that one preparation; imports are done before measuring.

Run a child by hand: ``python -m benchmarks.input_prep --child prepare|baseline PATH``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from benchmarks._common import PYTHON, ROOT, Mode, Row, child_env, fmt, median, proc_status_kb

__all__ = ["make_inputs", "run"]

PNG_SIZE = (5472, 3648)
JPEG_TARGET_BYTES = 9 * 1024 * 1024
#: The smoke run's smaller files: the PNG (5 MP, ~12 MB) is still over the vendor's 10 MB limit,
#: so the same re-encoding path runs.
SMOKE_PNG_SIZE = (2736, 1824)
SMOKE_JPEG_TARGET_BYTES = 2 * 1024 * 1024


def make_inputs(
    folder: Path, png_size: tuple[int, int] = PNG_SIZE, jpeg_bytes: int = JPEG_TARGET_BYTES
) -> tuple[Path, Path]:
    """Write the 20 MP PNG and the ~9 MB JPEG (whole-image Pillow operations only: fast)."""
    from PIL import Image

    width, height = png_size
    ramp = Image.linear_gradient("L").resize(png_size)
    noise_a = Image.effect_noise(png_size, 40)
    noise_b = Image.effect_noise(png_size, 40)
    # A gradient under Gaussian noise: photo-like sizes, not a flat image that compresses to nothing.
    picture = Image.merge(
        "RGB",
        (
            Image.blend(ramp, noise_a, 0.5),
            Image.blend(ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), noise_b, 0.5),
            Image.blend(ramp.transpose(Image.Transpose.FLIP_TOP_BOTTOM), noise_a, 0.3),
        ),
    )
    png = folder / "photo.png"
    picture.save(png, format="PNG", compress_level=1)
    # JPEG size grows with the pixel count: one trial encode, then scale to hit ~9 MB.
    jpeg = folder / "photo.jpg"
    picture.save(jpeg, format="JPEG", quality=90)
    scale = (jpeg_bytes / jpeg.stat().st_size) ** 0.5
    if abs(scale - 1) > 0.02:
        resized = picture.resize((round(width * scale), round(height * scale)))
        resized.save(jpeg, format="JPEG", quality=90)
    return png, jpeg


def _describe(path: Path) -> tuple[str, float]:
    """``WxH`` and the size in MB of an image file."""
    from PIL import Image

    with Image.open(path) as img:
        return f"{img.width}x{img.height}", os.path.getsize(path) / (1024 * 1024)


# --- the child: one preparation, measured -----------------------------------------------------


def _child(mode: str, path: Path) -> dict[str, Any]:
    import base64

    if mode == "prepare":
        import PIL.Image  # noqa: F401 - imported before measuring: the import is not the work

        from kling_omni_mcp.media.inputs import prepare_image_input

        def work() -> int:
            prepared = prepare_image_input(str(path), allowed_dirs=[path.parent])
            return len(prepared.payload)
    else:

        def work() -> int:
            return len(base64.b64encode(path.read_bytes()).decode("ascii"))

    before = proc_status_kb("VmRSS")
    started = time.perf_counter()
    payload_chars = work()
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "peak_extra_kb": proc_status_kb("VmHWM") - before,
        "payload_chars": payload_chars,
    }


def child_main(argv: list[str]) -> int:
    """``--child prepare|baseline PATH``: print one measurement as JSON."""
    print(json.dumps(_child(argv[0], Path(argv[1]))))
    return 0


# --- the parent -------------------------------------------------------------------------------


async def _measure(mode: str, path: Path, home: Path) -> dict[str, Any]:
    command = [PYTHON, "-m", "benchmarks.input_prep", "--child", mode, str(path)]
    with anyio.fail_after(300):
        done = await anyio.run_process(command, cwd=ROOT, env=child_env(home), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"input_prep child ({mode} {path.name}) failed:\n{done.stderr.decode()[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


async def run(mode: Mode) -> list[Row]:
    """Median time and peak extra memory over 3 runs each (1 in quick and smoke runs; smoke
    runs use a 5 MP PNG and a 2 MB JPEG)."""
    runs = 3 if mode == "full" else 1
    smoke = mode == "smoke"
    png_size, jpeg_bytes = (
        (SMOKE_PNG_SIZE, SMOKE_JPEG_TARGET_BYTES) if smoke else (PNG_SIZE, JPEG_TARGET_BYTES)
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kling-bench-inputs-") as tmp:
        folder = Path(tmp)
        png, jpeg = await anyio.to_thread.run_sync(make_inputs, folder, png_size, jpeg_bytes)
        megapixels = round(png_size[0] * png_size[1] / 1e6)
        labels = (f"{megapixels} MP PNG", f"{jpeg_bytes // (1024 * 1024)} MB JPEG")
        for path, what in zip((png, jpeg), labels, strict=True):
            dims, size_mb = await anyio.to_thread.run_sync(_describe, path)
            ours: list[dict[str, Any]] = []
            bare: list[dict[str, Any]] = []
            for _ in range(runs):
                ours.append(await _measure("prepare", path, folder))
                bare.append(await _measure("baseline", path, folder))
            label = f"{what} from disk → `create_image` payload"
            t_ours = median([r["seconds"] for r in ours]) * 1000
            t_bare = median([r["seconds"] for r in bare]) * 1000
            m_ours = median([r["peak_extra_kb"] for r in ours]) / 1024
            m_bare = median([r["peak_extra_kb"] for r in bare]) / 1024
            chars = ours[0]["payload_chars"] / 1e6
            bare_chars = bare[0]["payload_chars"] / 1e6
            base = "read + Base64"
            rows.append(
                Row(
                    f"{label}: time",
                    fmt(t_ours, "ms"),
                    fmt(t_bare, "ms"),
                    f"{t_ours / t_bare:.1f}x; {dims}, {size_mb:.1f} MB; payload {chars:.1f} M chars "
                    f"vs {bare_chars:.1f} M",
                    baseline_is=base,
                )
            )
            rows.append(
                Row(
                    f"{label}: peak extra memory",
                    fmt(m_ours, "MB"),
                    fmt(m_bare, "MB"),
                    f"{m_ours / m_bare:.1f}x",
                    baseline_is=base,
                )
            )
    return rows


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child_main(sys.argv[2:]))
    sys.exit("usage: python -m benchmarks.input_prep --child prepare|baseline PATH")
