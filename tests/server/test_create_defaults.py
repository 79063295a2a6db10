"""What ``create_image`` sends when the caller leaves ``aspect_ratio`` out, seen from outside:
the tool answer, and the request the simulated vendor recorded."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mcp import Client

from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.app import build_server
from tests.conftest import SimHandle, text_of, write_png

pytestmark = pytest.mark.anyio

# (id, model, with a reference image?, aspect_ratio given, aspect_ratio the vendor must receive,
#  a note expected?)
CASES = [
    # kling-v3-omni refuses "auto" for a text-only prompt: the server picks 1:1 and says so.
    ("v3-omni-text-only", "kling-v3-omni", False, None, "1:1", True),
    # With a reference image "auto" is fine (it follows the image): nothing to say.
    ("v3-omni-image", "kling-v3-omni", True, None, "auto", False),
    ("o1-text-only", "kling-image-o1", False, None, "auto", False),
    ("o1-image", "kling-image-o1", True, None, "auto", False),
    # A ratio the caller gives is sent as given.
    ("v3-omni-given", "kling-v3-omni", False, "16:9", "16:9", False),
]


@pytest.mark.parametrize(
    ("model", "with_image", "given", "sent", "noted"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
async def test_left_out_aspect_ratio_gets_a_default_the_model_accepts(
    model: str,
    with_image: bool,
    given: str | None,
    sent: str,
    noted: bool,
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
    workdir: Path,
) -> None:
    args: dict[str, object] = {"prompt": "A lighthouse at dusk", "model": model}
    if with_image:
        args["images"] = [str(write_png(workdir / "ref.png"))]
        args["prompt"] = "A lighthouse at dusk in the style of <<<image_1>>>"
    if given is not None:
        args["aspect_ratio"] = given
    async with Client(build_server(make_settings(simulator.base_url))) as client:
        result = await client.call_tool("create_image", args)
    assert not result.is_error, text_of(result)
    answer = result.structured_content
    assert answer is not None
    # The create went through once, carrying the default.
    [record] = simulator.sim.tasks.values()
    assert record.task_id == answer["task_id"]
    assert record.body["model_name"] == model
    assert record.body.get("aspect_ratio", "auto") == sent
    notes = [note for note in answer["notes"] if "aspect_ratio" in note]
    if noted:
        # The caller learns what was chosen for them, in the text the model reads too.
        assert len(notes) == 1 and "1:1" in notes[0], answer["notes"]
        assert notes[0] in text_of(result)
    else:
        assert notes == [], answer["notes"]
