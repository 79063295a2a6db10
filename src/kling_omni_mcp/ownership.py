"""Who may see a task: the caller as a plain value, and each task's owner.

The vendor account is shared by everyone who signs in to this server; the server keeps the
boundary. A task created by a signed-in caller is recorded with that caller's identity (in its
sidecar, the durable record, and in memory); other signed-in callers are told the task does not
exist, in exactly the words used for an unknown id. ``KLING_SHARED_TASKS=true`` turns the
boundary off (a team sharing one gallery).

Identities are ``"token:<hash prefix>"`` (each static token is its own caller) and
``"oauth:<sub>"`` (server/identity.py). A caller without one (stdio, or HTTP without sign-in) is
the machine's own user and sees every task, as before. A task without a recorded owner (made in
the vendor's console, or before owners were recorded) is visible only to such callers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

__all__ = ["LOCAL_CALLER", "Caller", "TaskOwners", "not_found_message"]

#: Owners kept in memory; older ones are read back from the sidecars when asked about.
_MEMORY_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, as the transport established it.

    ``identity``: the signed-in identity, or None for the local user (no sign-in).
    ``remote``: the caller reaches this server over HTTP, so this server's disk is not theirs
    (local paths are refused as inputs unless KLING_INPUT_DIRS is set; answers carry links).
    """

    identity: str | None = None
    remote: bool = False


#: The local user of a stdio server: sees every task, may read allowed local files.
LOCAL_CALLER = Caller()


def not_found_message(task_id: str) -> str:
    """The one answer for an unknown task and for someone else's: it reveals nothing more."""
    return (
        f"No task {task_id!r} was found: check the task_id (list_tasks shows your tasks), "
        "or create a new one with create_image."
    )


class TaskOwners:
    """Task id (and external id) → owner identity, in memory, backed by the sidecars.

    ``read_owner(task_id)`` returns ``(owner, external_task_id)`` from the durable record, or
    None when this server has no record of the task.
    """

    def __init__(
        self,
        read_owner: Callable[[str], Awaitable[tuple[str | None, str | None] | None]],
        *,
        shared: bool,
    ) -> None:
        self._read_owner = read_owner
        self.shared = shared
        self._owners: OrderedDict[str, str | None] = OrderedDict()

    def isolates(self, caller: Caller) -> bool:
        """True when ``caller`` sees only its own tasks."""
        return caller.identity is not None and not self.shared

    def record(self, owner: str | None, *ids: str | None) -> None:
        """Remember ``owner`` for every id given (task id, external id)."""
        for key in ids:
            if key:
                self._owners[key] = owner
                self._owners.move_to_end(key)
        while len(self._owners) > _MEMORY_LIMIT:
            self._owners.popitem(last=False)

    async def owner_of(self, task_id: str) -> tuple[bool, str | None]:
        """``(known, owner)``: whether this server has a record of the task, and its owner."""
        if task_id in self._owners:
            return True, self._owners[task_id]
        found = await self._read_owner(task_id)
        if found is None:
            return False, None
        owner, external_id = found
        self.record(owner, task_id, external_id)
        return True, owner

    async def visible(self, task_id: str, caller: Caller) -> bool:
        """True when ``caller`` may see ``task_id`` (by what is known here, without the vendor)."""
        if not self.isolates(caller):
            return True
        known, owner = await self.owner_of(task_id)
        return known and owner == caller.identity
