"""The sidecar's merge rule: a value replaces, a null or a missing field keeps what is known,
unknown keys survive."""

from __future__ import annotations

from kling_omni_mcp.results import Sidecar, SidecarImage


def test_a_later_look_never_erases_what_the_create_recorded() -> None:
    created = Sidecar.model_validate(
        {"task_id": "t1", "prompt": "Kites", "model": "kling-image-o1", "status": "submitted", "future": 1}
    )
    looked = Sidecar(
        task_id="t1",
        status="succeeded",
        status_message=None,
        units_charged="8",
        images=[SidecarImage(index=0, url="https://x/0.png", path="/out/t1/t1_0.png")],
    )
    merged = created.merged(looked).model_dump(mode="json", exclude_unset=True)
    assert merged == {
        "task_id": "t1",
        "prompt": "Kites",  # kept: the look did not set it
        "model": "kling-image-o1",
        "status": "succeeded",  # replaced: the look set it
        "status_message": None,  # null where nothing was known before
        "units_charged": "8",
        "images": [{"index": 0, "url": "https://x/0.png", "path": "/out/t1/t1_0.png"}],
        "future": 1,  # a key from another version of this server survives
    }


def test_null_does_not_overwrite_a_known_reason() -> None:
    failed = Sidecar(task_id="t1", status="failed", status_message="refused")
    again = failed.merged(Sidecar(task_id="t1", status="failed", status_message=None))
    assert again.status_message == "refused"
