"""Results survive: a restarted (or killed) server still finds a task from its id and saves its
images, and a sidecar is never half-written, whatever fails while it is being written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from PIL import Image
from starlette.types import Message, Receive, Scope, Send

from kling_omni_mcp.config import Settings
from kling_omni_mcp.media.outputs import ResultStore
from kling_omni_mcp.simulator import Simulator, SimulatorConfig
from tests.conftest import SIM_DEFAULTS, TEST_API_KEY, SimHandle, command, serve_sim, sim_with, text_of
from tests.reliability.helpers import leftovers, mcp_session

pytestmark = pytest.mark.anyio


def sidecar_of(settings: Settings, task_id: str) -> dict[str, Any]:
    data = json.loads((settings.output_dir / task_id / f"{task_id}.json").read_text())
    assert isinstance(data, dict)
    return data


def verified(path: Path) -> Path:
    with Image.open(path) as img:
        img.verify()
    return path


# --- restarts -------------------------------------------------------------------------------------


@sim_with(duration=1.0)
async def test_a_restarted_server_finds_and_saves_the_task(
    simulator: SimHandle, make_settings: Callable[..., Settings]
) -> None:
    """Server 1 creates (and is closed in the middle of a wait); server 2 has only the task id."""
    sim = simulator.sim
    settings = make_settings(simulator.base_url)
    async with mcp_session(settings) as first:
        created = await first.call_tool("create_image", {"prompt": "Two boats at dawn", "n": 2})
        assert not created.is_error, text_of(created)
        task_id = created.structured_content["task_id"]
        with anyio.move_on_after(0.3):  # the host gives up; then the whole server goes away
            await first.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 30})
    assert sim.counters.downloads == 0
    assert sidecar_of(settings, task_id)["status"] == "submitted"

    async with mcp_session(settings, mode="legacy") as second:
        waited = await second.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 20})
        assert not waited.is_error, text_of(waited)
        data = waited.structured_content
        assert data is not None and data["status"] == "succeeded"
        paths = [verified(Path(img["path"])) for img in data["images"]]
        assert len(paths) == 2 and all(p.parent == settings.output_dir / task_id for p in paths)
        # What server 1 knew (prompt, model, estimate) and what server 2 saved, in one record.
        sidecar = sidecar_of(settings, task_id)
        assert sidecar["prompt"] == "Two boats at dawn" and sidecar["model"] == "kling-image-o1"
        assert sidecar["estimated_units"] == 16 and sidecar["status"] == "succeeded"
        assert [img["path"] for img in sidecar["images"]] == [str(p) for p in paths]
        assert data["estimated_units"] == 16  # read back from the sidecar by the new server

    async with mcp_session(settings) as third:
        got = await third.call_tool("get_task", {"task_id": task_id})
        assert not got.is_error
        assert [img["path"] for img in got.structured_content["images"]] == [str(p) for p in paths]
        listed = await third.call_tool("list_tasks", {})
        assert listed.structured_content["tasks"][0]["paths"] == [str(p) for p in paths]
        resource = await third.read_resource(f"kling://tasks/{task_id}/images/1")
        assert resource.contents
    assert sim.counters.downloads == 2  # saved once, never fetched again
    assert sim.counters.creates == 1
    assert leftovers(settings.output_dir) == []


class SlowResults:
    """Wraps the simulator: while ``slow`` is set, result files trickle out in small pieces."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.slow = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/results/") or not self.slow:
            await self.app(scope, receive, send)
            return

        async def trickle(message: Message) -> None:
            body = message.get("body", b"")
            if message["type"] != "http.response.body" or len(body) < 64:
                await send(message)
                return
            step = len(body) // 40
            for start in range(0, len(body), step):
                await send(
                    {"type": "http.response.body", "body": body[start : start + step], "more_body": True}
                )
                await anyio.sleep(0.25)
            await send(
                {"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)}
            )

        await self.app(scope, receive, trickle)


class SlowResultsSimulator(Simulator):
    """The simulator behind ``SlowResults``: downloads trickle until ``slow_results.slow`` is cleared."""

    def __init__(self, config: SimulatorConfig) -> None:
        super().__init__(config)
        self.slow_results = SlowResults(self.app)
        self.app = self.slow_results


async def test_a_server_killed_mid_download_loses_nothing(
    make_settings: Callable[..., Settings], workdir: Path, tmp_path: Path
) -> None:
    """SIGKILL while an image is half-downloaded: no file appears under a final name; a new server
    given only the task id saves the image whole."""
    sim = SlowResultsSimulator(SimulatorConfig(**{**SIM_DEFAULTS, "duration": 0.3}))
    pid_file = tmp_path / "server.pid"
    async with serve_sim(sim) as vendor:
        base_url = vendor.base_url
        settings = make_settings(base_url)
        env = {
            "HOME": str(tmp_path / "home"),
            "KLING_API_KEY": TEST_API_KEY,
            "KLING_API_BASE_URL": base_url,
            "KLING_DOWNLOAD_ALLOW_PRIVATE": "true",
            "KLING_OUTPUT_DIR": str(settings.output_dir),
            "KLING_POLL_INITIAL_SECONDS": "0.1",
        }
        cmd = command()
        # sh records its pid, then becomes the server (exec keeps the pid).
        params = StdioServerParameters(
            command="/bin/sh", args=["-c", 'echo $$ > "$0"; exec "$@"', str(pid_file), *cmd], env=env
        )
        outcome: list[Any] = []

        async def call_and_die(client: Client) -> None:
            try:
                outcome.append(
                    await client.call_tool("create_image", {"prompt": "Killed midway", "wait_seconds": 30})
                )
            except Exception as exc:  # the process is killed under the call
                outcome.append(exc)

        partial: list[Path] = []
        session = contextlib.AsyncExitStack()
        client = await session.enter_async_context(Client(params, read_timeout_seconds=60))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_and_die, client)
                with anyio.fail_after(30):
                    while not partial:
                        partial = [p for p in leftovers(settings.output_dir) if ".partial" in p.name]
                        await anyio.sleep(0.02)
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
        finally:
            with contextlib.suppress(Exception):  # closing a session whose server is dead
                await session.aclose()
        assert len(outcome) == 1 and isinstance(outcome[0], Exception), outcome  # no answer came
        [task_id] = list(sim.tasks)
        folder = settings.output_dir / task_id
        # Only the create's sidecar and the hidden, unfinished download: nothing under a final name.
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [f"{task_id}.json"]
        assert ResultStore(settings.output_dir, allow_private=True).find_saved_images(task_id) == []

        sim.slow_results.slow = False
        async with mcp_session(settings) as client:
            got = await client.call_tool("get_task", {"task_id": task_id})
            assert not got.is_error, text_of(got)
            [image] = got.structured_content["images"]
            saved = verified(Path(image["path"]))
            assert saved == folder / f"{task_id}_0.png"
            assert saved.read_bytes() == await sim.render(sim.tasks[task_id], 0, watermark=False)
            sidecar = sidecar_of(settings, task_id)
            assert sidecar["prompt"] == "Killed midway" and sidecar["images"][0]["path"] == str(saved)
        # What a SIGKILL left (the partial of the killed process) is swept at the next start.
        assert leftovers(settings.output_dir) == []


# --- sidecars are never half-written ----------------------------------------------------------------


async def test_a_failing_rename_or_fsync_keeps_the_old_sidecar(
    simulator: SimHandle,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(simulator.base_url)
    real_replace, real_fsync = os.replace, os.fsync

    def failing_replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        if str(dst).endswith(".json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst, *args, **kwargs)

    def failing_fsync(fd: int) -> None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if ".json.partial" in target:  # only the sidecar's temporary file
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    async with mcp_session(settings) as client:
        for patch in ("replace", "fsync"):
            created = await client.call_tool("create_image", {"prompt": f"Kites ({patch})"})
            assert not created.is_error, text_of(created)
            task_id = created.structured_content["task_id"]
            before = (settings.output_dir / task_id / f"{task_id}.json").read_bytes()
            if patch == "replace":
                monkeypatch.setattr(os, "replace", failing_replace)
            elif sys.platform == "linux":
                monkeypatch.setattr(os, "fsync", failing_fsync)
            else:
                continue
            caplog.clear()
            waited = await client.call_tool("wait_for_task", {"task_id": task_id, "timeout_seconds": 20})
            monkeypatch.undo()
            # The images matter more than their notes: the call succeeds, the failure is logged.
            assert not waited.is_error, text_of(waited)
            path = verified(Path(waited.structured_content["images"][0]["path"]))
            assert "Could not write the sidecar" in caplog.text
            # The old sidecar is intact, byte for byte, and no temporary file is left.
            assert (settings.output_dir / task_id / f"{task_id}.json").read_bytes() == before
            assert leftovers(settings.output_dir) == []
            # Once writing works again, the next look records the result.
            again = await client.call_tool("get_task", {"task_id": task_id})
            assert not again.is_error
            sidecar = sidecar_of(settings, task_id)
            assert sidecar["prompt"] == f"Kites ({patch})"
            assert sidecar["images"][0]["path"] == str(path)


WRITER = """
import sys
from pathlib import Path
from kling_omni_mcp.media.outputs import ResultStore

store = ResultStore(Path(sys.argv[1]), allow_private=True)
version = 0
while True:
    store.write_sidecar("task-1", {"version": version, "blob": str(version % 10) * 6_000_000, "end": version})
    print(version, flush=True)
    version += 1
"""


def _stop_inside_a_write(proc: subprocess.Popen[str], folder: Path) -> bool:
    """Freeze ``proc`` (SIGSTOP) at a moment its temporary sidecar exists; False if it never did."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(".partial" in name for name in os.listdir(folder)):
            proc.send_signal(signal.SIGSTOP)
            if any(".partial" in name for name in os.listdir(folder)):
                return True  # frozen half-way through writing
            proc.send_signal(signal.SIGCONT)
    return False


def test_a_writer_killed_mid_write_never_leaves_a_half_sidecar(tmp_path: Path) -> None:
    """SIGKILL a process that rewrites a 6 MB sidecar in a loop, frozen half-way through a write
    (and, for good measure, at random moments): the sidecar is always one whole version."""
    store = ResultStore(tmp_path / "out", allow_private=True)
    folder = tmp_path / "out" / "task-1"
    rng = random.Random(20261125)
    for round_ in range(6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True
        )
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # one version is surely complete
            assert first.strip().isdigit(), first
            if round_ % 2 == 0:
                assert _stop_inside_a_write(proc, folder), "never caught the writer inside a write"
            else:
                time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=30)
        data = store.read_sidecar("task-1")
        assert data is not None, "the sidecar is unreadable after a kill"
        assert data["version"] == data["end"] >= int(first)
        assert data["blob"] == str(data["version"] % 10) * 6_000_000
        # A killed writer can leave its hidden temporary file (nothing runs after SIGKILL); it is
        # never mistaken for the sidecar. Remove it so each round is judged alone.
        for stale in folder.iterdir():
            if ".partial" in stale.name:
                assert stale.name.startswith(".")
                stale.unlink()
