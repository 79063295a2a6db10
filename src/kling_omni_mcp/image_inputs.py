"""Turn the ``images`` of a create into vendor payloads: paths, URLs, Base64 and ``kling://``.

One job: decide where each reference comes from and hand it to ``media`` for preparation, with
the caller's rules applied. Over HTTP the server's home folder is not the caller's, so local
paths need folders the operator named (``KLING_INPUT_DIRS``); ``kling://tasks/{id}/images/{n}``
is an image this server saved, read from the output folder (the caller's own under isolation),
never fetched again. Files are read in worker threads; refusals name ``images[i]``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import anyio
import anyio.to_thread

from kling_omni_mcp.config import Settings
from kling_omni_mcp.input_refs import local_path_refusal, looks_like_local_path, parse_image_uri
from kling_omni_mcp.media.errors import MediaError
from kling_omni_mcp.media.inputs import PreparedImage, prepare_image_input
from kling_omni_mcp.media.outputs import ResultStore
from kling_omni_mcp.ownership import Caller, TaskOwners
from kling_omni_mcp.request_builder import ServiceError

__all__ = ["ImageInputs"]


class ImageInputs:
    """Prepares a create's reference images for one server (its settings, results and owners)."""

    def __init__(self, settings: Settings, store: ResultStore, owners: TaskOwners) -> None:
        self._settings = settings
        self._store = store
        self._owners = owners

    async def prepare(self, images: Sequence[str], caller: Caller) -> list[PreparedImage]:
        """Each of ``images`` as a vendor payload, in order; a refusal names ``images[i]``."""
        out: list[PreparedImage] = []
        # Over HTTP the server's home folder is not the caller's: only folders the operator named.
        remote_without_dirs = caller.remote and self._settings.input_dirs is None
        dirs = [] if remote_without_dirs else self._settings.allowed_input_dirs
        for position, value in enumerate(images, start=1):
            label = f"images[{position - 1}] (<<<image_{position}>>>)"
            try:
                earlier = parse_image_uri(value)
            except ValueError as exc:
                raise ServiceError(f"{label}: {exc}") from None
            try:
                if earlier is not None:
                    task_id, index = earlier
                    out.append(await self._earlier_result(label, task_id, index, value, caller))
                    continue
                if remote_without_dirs and looks_like_local_path(value):
                    raise ServiceError(f"{label}: {local_path_refusal()}")
                prepare = functools.partial(prepare_image_input, value, allowed_dirs=dirs)
                out.append(await anyio.to_thread.run_sync(prepare))
            except MediaError as exc:
                raise ServiceError(f"{label}: {exc}") from None
        return out

    async def _earlier_result(
        self, label: str, task_id: str, index: int, value: str, caller: Caller
    ) -> PreparedImage:
        """An image this server saved, read from the output folder (never fetched again)."""
        path = None
        if await self._owners.visible(task_id, caller):
            path = await anyio.to_thread.run_sync(self._store.saved_image, task_id, index)
        if path is None:
            raise ServiceError(
                f"{label}: no saved image {index} of task {task_id!r} is known to this server. Use the "
                f'kling:// reference that get_task(task_id="{task_id}") or wait_for_task gives for an image '
                "of one of your finished tasks (list_tasks shows them), or send the image itself."
            )
        prepare = functools.partial(prepare_image_input, str(path), allowed_dirs=[self._store.root])
        try:
            prepared = await anyio.to_thread.run_sync(prepare)
        except MediaError as exc:  # name the reference, never the server's path
            raise ServiceError(f"{label}: {str(exc).replace(str(path), value.strip())}") from None
        return dataclasses.replace(prepared, source=value.strip())
