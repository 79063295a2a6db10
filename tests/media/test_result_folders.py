"""Result folders: two task ids never share one, whatever characters they hold; plain ids keep
the ``<task_id>/<task_id>_<index>.png`` layout so existing results are still found."""

from __future__ import annotations

from pathlib import Path

import pytest

from kling_omni_mcp.media.outputs import ResultStore, task_folder_name

# Ids that differ only in what a file system cannot hold (or folds together).
ODD_IDS = [
    "a/b",
    "a?b",
    "a_b",
    "a:b",
    "a\\b",
    "A_B",
    ".",
    "..",
    "...",
    "x" * 300,
    "x" * 299 + "y",
    "Task-1",
    "task-1",
    "a b",
    "é",
    "e",
    "862173094419476533",
]


def test_ids_that_differ_never_share_a_folder(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    folders = [store.task_dir(task_id) for task_id in ODD_IDS]
    # Distinct even on a case-insensitive file system, and short enough for any.
    assert len({f.name.lower() for f in folders}) == len(ODD_IDS)
    assert all(len(f.name.encode()) <= 100 for f in folders)
    assert all(f.parent == tmp_path.resolve() for f in folders)
    for task_id in ODD_IDS:
        store.write_sidecar(task_id, {"task_id": task_id})
    for task_id in ODD_IDS:
        assert store.read_sidecar(task_id) == {"task_id": task_id}


@pytest.mark.parametrize("task_id", ["862173094419476533", "kom-0f1e2d3c4b5a69788796a5b4c3d2e1f0", "t_1-a"])
def test_plain_ids_keep_todays_layout(task_id: str, tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert task_folder_name(task_id) == task_id
    assert store.image_path(task_id, 3) == tmp_path.resolve() / task_id / f"{task_id}_3.png"
    assert store.sidecar_path(task_id) == tmp_path.resolve() / task_id / f"{task_id}.json"


def test_saved_images_of_an_odd_id_are_found_again(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    path = store.image_path("a/b", 0)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    assert store.find_saved_images("a/b") == [path]
    assert store.find_saved_images("a?b") == []
