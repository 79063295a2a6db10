"""Path confinement (CWE-22): table-driven, over a fake home folder in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kling_omni_mcp.media import InputImageError, OutputError, confined_output_path, resolve_input_path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake home: pictures, secrets in dot-folders, links in and out, a FIFO; plus an outside folder."""
    home = tmp_path / "home"
    pics = home / "pics"
    (pics / "sub").mkdir(parents=True)
    (pics / "cat.png").write_bytes(b"cat")
    (pics / "dog.jpg").write_bytes(b"dog")
    (pics / ".cat.png").write_bytes(b"hidden twin")
    (pics / ".env").write_text("API_KEY=secret")
    (home / ".ssh").mkdir()
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"secret")
    (pics / "link_out.png").symlink_to(outside / "secret.png")
    (pics / "link_in.png").symlink_to(pics / "cat.png")
    (pics / "link_hidden.png").symlink_to(home / ".ssh" / "id_rsa")
    (pics / "dir_link").symlink_to(outside, target_is_directory=True)
    os.mkfifo(pics / "fifo.png")
    monkeypatch.setenv("HOME", str(home))
    return home


ALLOWED = [
    ("{home}/pics/cat.png", "pics/cat.png"),
    ("  {home}/pics/cat.png  ", "pics/cat.png"),
    ("{home}/pics/../pics/cat.png", "pics/cat.png"),
    ("{home}/pics/link_in.png", "pics/cat.png"),
    ("~/pics/dog.jpg", "pics/dog.jpg"),
]


@pytest.mark.parametrize(("raw", "expected"), ALLOWED)
def test_allowed_paths_resolve_to_the_real_file(home: Path, raw: str, expected: str) -> None:
    got = resolve_input_path(raw.format(home=home), [home])
    assert got == (home / expected).resolve()


REFUSED = [
    # (raw, message fragment)
    ("{home}/../outside/secret.png", "outside the folders"),
    ("{home}/pics/../../outside/secret.png", "outside the folders"),
    ("/etc/passwd", "outside the folders"),
    ("{home}/pics/link_out.png", "outside the folders"),
    ("{home}/pics/dir_link/secret.png", "outside the folders"),
    ("{home}/../outside/missing.png", "outside the folders"),  # no existence oracle outside
    ("{home}/.ssh/id_rsa", "hidden"),
    ("~/.ssh/id_rsa", "hidden"),
    ("{home}/pics/.env", "hidden"),
    ("{home}/pics/link_hidden.png", "hidden"),
    ("{home}/pics/../.ssh/id_rsa", "hidden"),
    ("{home}/pics/sub", "is a folder"),
    ("{home}/pics/fifo.png", "named pipe"),
    ("pics/cat.png", "relative path"),
    ("./cat.png", "relative path"),
    ("..\\..\\etc\\passwd", "relative path"),
    ("C:\\Users\\me\\cat.png", "relative path"),  # a Windows path means nothing here
    ("{home}/pics\\..\\..\\outside\\secret.png", "No file at"),  # a backslash is a plain character
    ("", "not a usable file path"),
    ("{home}/pics/cat.png\x00.jpg", "not a usable file path"),
]


@pytest.mark.parametrize(("raw", "fragment"), REFUSED)
def test_refused_paths_say_why(home: Path, raw: str, fragment: str) -> None:
    with pytest.raises(InputImageError) as info:
        resolve_input_path(raw.format(home=home), [home])
    message = str(info.value)
    assert fragment in message
    # Never the contents of anything it looked at.
    for secret in ("PRIVATE KEY", "API_KEY=secret"):
        assert secret not in message


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_devices_are_refused_even_inside_an_allowed_folder(device: str) -> None:
    if not Path(device).exists():
        pytest.skip(f"{device} does not exist here")
    with pytest.raises(InputImageError, match="character device, not a regular file"):
        resolve_input_path(device, [Path("/dev")])


@pytest.mark.parametrize(
    ("raw", "suggested"),
    [
        ("{home}/pics/cat.pgn", "cat.png"),
        ("{home}/pics/dgo.jpg", "dog.jpg"),
        ("{home}/pic/cat.png", "pics"),  # the first missing part is a folder
    ],
)
def test_missing_file_suggests_near_names(home: Path, raw: str, suggested: str) -> None:
    with pytest.raises(InputImageError) as info:
        resolve_input_path(raw.format(home=home), [home])
    message = str(info.value)
    assert message.startswith(f"No file at {raw.format(home=home)}.")
    assert f"Did you mean: {suggested}" in message


def test_hints_never_list_hidden_names(home: Path) -> None:
    with pytest.raises(InputImageError) as info:
        resolve_input_path(f"{home}/pics/cat.pgn", [home])
    assert ".cat.png" not in str(info.value)
    assert ".env" not in str(info.value)


def test_hints_never_look_above_the_allowed_folder(home: Path) -> None:
    # Only pics is allowed: its sibling folders (and outside) must not be suggested.
    pics = home / "pics"
    with pytest.raises(InputImageError) as info:
        resolve_input_path(f"{home}/picz/cat.png", [pics])
    assert "outside the folders" in str(info.value)
    assert "Did you mean" not in str(info.value)


def test_a_hidden_allowed_folder_itself_is_usable(home: Path) -> None:
    # Only names BELOW an allowed folder are checked: a configured folder may itself be hidden.
    hidden_out = home / ".kling-out"
    hidden_out.mkdir()
    (hidden_out / "result.png").write_bytes(b"x")
    assert resolve_input_path(str(hidden_out / "result.png"), [home, hidden_out]).name == "result.png"
    with pytest.raises(InputImageError, match="hidden"):
        resolve_input_path(str(hidden_out / "result.png"), [home])


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        (("task-1", "task-1_0.png"), ("task-1", "task-1_0.png")),
        (("../../etc", "passwd"), ("_.._etc", "passwd")),
        (("a/b\\c", "x y?.png"), ("a_b_c", "x_y_.png")),
        ((".hidden",), ("hidden",)),
        (("...dots",), ("dots",)),
    ],
)
def test_output_parts_are_sanitised_and_stay_inside(
    tmp_path: Path, parts: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    got = confined_output_path(tmp_path, *parts)
    assert got == tmp_path.resolve().joinpath(*expected)
    assert got.resolve().is_relative_to(tmp_path.resolve())


@pytest.mark.parametrize("bad", ["..", ".", "", "///", "__"])
def test_output_parts_with_nothing_usable_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(OutputError, match="no usable characters"):
        confined_output_path(tmp_path, bad)


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3))
def test_any_output_name_stays_inside_the_root_and_visible(parts: list[str]) -> None:
    root = Path("/srv/kling-out")
    try:
        path = confined_output_path(root, *parts)
    except OutputError:
        return  # a name with nothing usable is refused, which is also safe
    rel = path.relative_to(root)
    assert len(rel.parts) == len(parts)
    assert all(not part.startswith(".") and part not in ("", "..") for part in rel.parts)
