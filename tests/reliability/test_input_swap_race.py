"""A parent folder swapped for a symlink between the confinement check and the open (TOCTOU).

A local neighbour who can write inside an allowed folder flips ``pics/sub`` between a real folder
and a symlink to a private folder, as fast as it can, while the server prepares
``pics/sub/photo.png`` again and again. Whatever the interleaving, the private file's bytes must
never come out in a payload: the server checks the file it actually opened, not the path.
"""

from __future__ import annotations

import base64
import ctypes
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kling_omni_mcp.media import paths
from kling_omni_mcp.media.errors import InputImageError
from kling_omni_mcp.media.inputs import prepare_image_input
from tests.conftest import write_png

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlink swapping needs POSIX rename/symlink")

RACE_SECONDS = 5.0
MAX_ATTEMPTS = 200_000


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchanger() -> Callable[[Path, Path], None] | None:
    """Linux's renameat2(RENAME_EXCHANGE): swap two names atomically (never a moment with neither)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None

    def exchange(a: Path, b: Path) -> None:
        if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
            raise OSError(ctypes.get_errno(), "renameat2 failed")

    return exchange


def _flip(sub: Path, spare: Path, outside: Path, stop: threading.Event) -> int:
    """Swap ``sub`` between the real folder and a symlink to ``outside`` until ``stop``; count flips."""
    exchange = _exchanger()
    flips = 0
    if exchange is not None:
        os.symlink(outside, spare)
        while not stop.is_set() and flips < MAX_ATTEMPTS:
            exchange(sub, spare)
            flips += 1
        if sub.is_symlink():
            exchange(sub, spare)
        return flips
    while not stop.is_set() and flips < MAX_ATTEMPTS:  # elsewhere: a brief moment with no folder
        os.rename(sub, spare)
        os.symlink(outside, sub)
        os.unlink(sub)
        os.rename(spare, sub)
        flips += 1
    return flips


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Switch threads as often as possible, so the flipper runs between any two of our steps."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


@pytest.mark.usefixtures("busy_switching")
@pytest.mark.parametrize("check", ["path read back from the descriptor", "device and inode"])
def test_a_swapped_parent_folder_never_leaks_an_outside_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, check: str
) -> None:
    if check == "device and inode":
        # As on a system where the kernel cannot say which path a descriptor has.
        monkeypatch.setattr(paths, "_path_of_fd", lambda fd: None)
    allowed = tmp_path / "pics"
    sub = allowed / "sub"
    outside = tmp_path / "private"
    sub.mkdir(parents=True)
    outside.mkdir()
    inside_bytes = write_png(sub / "photo.png", (320, 320), (0, 200, 0)).read_bytes()
    secret_bytes = write_png(outside / "photo.png", (320, 320), (200, 0, 0)).read_bytes()
    assert inside_bytes != secret_bytes
    secret_payload = base64.b64encode(secret_bytes).decode("ascii")

    stop = threading.Event()
    flips: list[int] = []
    flipper = threading.Thread(
        target=lambda: flips.append(_flip(sub, allowed / "spare", outside, stop)), daemon=True
    )
    outcomes = {"inside": 0, "refused": 0, "leaked": 0}
    flipper.start()
    try:
        deadline = time.monotonic() + RACE_SECONDS
        for _ in range(MAX_ATTEMPTS):
            if time.monotonic() > deadline:
                break
            try:
                got = prepare_image_input(str(sub / "photo.png"), allowed_dirs=[allowed])
            except InputImageError:
                outcomes["refused"] += 1
                continue
            if got.payload == secret_payload:
                outcomes["leaked"] += 1
            else:
                assert base64.b64decode(got.payload) == inside_bytes
                outcomes["inside"] += 1
    finally:
        stop.set()
        flipper.join(timeout=10)
    assert not flipper.is_alive()
    assert flips and flips[0] > 100, f"the race was not exercised: {flips} flips"
    assert outcomes["leaked"] == 0, f"outside file leaked: {outcomes}, {flips[0]} flips"
    # Both sides of the race happened: the test really raced.
    assert outcomes["inside"] > 0 and outcomes["refused"] > 0, outcomes
