"""A file turned into a symlink to the outside while its path is being checked is still refused.

``resolve_input_path`` resolves symlinks twice: before the confinement check, and again when it
opens the file's metadata. The swap is made at a fixed point (the existence check between the two)
so the race is won every time instead of once in a million.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kling_omni_mcp.media.errors import InputImageError
from kling_omni_mcp.media.paths import resolve_input_path


def test_file_swapped_for_an_outside_link_between_the_checks_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pics, outside = tmp_path / "pics", tmp_path / "outside"
    pics.mkdir()
    outside.mkdir()
    photo = pics / "cat.png"
    photo.write_bytes(b"cat")
    (outside / "secret.png").write_bytes(b"secret")
    real_exists = Path.exists
    swapped: list[Path] = []

    def exists_then_swap(self: Path, *args: object, **kwargs: object) -> bool:
        answer = real_exists(self, *args, **kwargs)  # type: ignore[arg-type]
        if self == photo.resolve() and not swapped:
            photo.unlink()
            photo.symlink_to(outside / "secret.png")
            swapped.append(self)
        return answer

    monkeypatch.setattr(Path, "exists", exists_then_swap)
    with pytest.raises(InputImageError, match="outside the folders"):
        resolve_input_path(str(photo), [pics])
    assert swapped, "the existence check was not reached: move the swap to where the check is now"
    # Untouched, the same path is accepted: the refusal came from the swap.
    monkeypatch.undo()
    photo.unlink()
    photo.write_bytes(b"cat")
    assert resolve_input_path(str(photo), [pics]) == photo.resolve()
