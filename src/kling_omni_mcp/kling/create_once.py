"""Creating a task at most once, however its attempts fail.

Every create carries an ``external_task_id`` (unique per account at the vendor). When an
attempt's fate is unknown (no answer, a timeout, a 5xx, an unreadable answer) the task may exist
anyway, so it is looked up by that id before the create is sent again; a resend that collides
with it (1201) means the lost attempt made it, and that task is the answer. Answers that prove
no task was made (an auth failure, 1302/1303 rate limits) are simply retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from kling_omni_mcp.kling._exchange import Exchanger, task_from
from kling_omni_mcp.kling.errors import (
    KlingAuthError,
    KlingError,
    KlingInvalidRequestError,
    KlingRateLimitError,
    KlingResponseError,
    KlingServerError,
    KlingTaskNotFoundError,
    KlingTransportError,
)
from kling_omni_mcp.kling.models import OMNI_IMAGE_PATH, TaskData, TaskInfo, task_path
from kling_omni_mcp.kling.retry import RESIGN_CODES, RetryBudget, RetryPolicy

__all__ = ["create_once"]

# Logged under the client's name, as before this module was split out of it: operators filter
# the client's creates by that name.
logger = logging.getLogger("kling_omni_mcp.kling.client")


async def create_once(
    exchanger: Exchanger,
    body: dict[str, Any],
    external_id: str,
    *,
    policy: RetryPolicy,
    resign: Callable[[], bool],
) -> TaskData:
    """The attempts of one create of ``body`` (which carries ``external_id``).

    The caller bounds the whole in time; ``policy`` bounds the attempts, and ``resign()`` drops
    a cached token for one re-signed retry after a 1000/1004.
    """
    where = f"POST {OMNI_IMAGE_PATH}"
    budget = RetryBudget(policy, "create")
    resigned = False
    in_doubt = False  # True once an earlier attempt may have made the task
    for attempt in range(1, policy.max_attempts + 2):  # +1: one re-signed auth retry
        try:
            data = await exchanger.send("POST", OMNI_IMAGE_PATH, json_body=body, attempt=attempt)
            task = task_from(data, where=where)
            return _with_external_id(task, external_id)
        except KlingAuthError as exc:
            # Authentication failed, so no task was made: resending is safe.
            if resigned or exc.code not in RESIGN_CODES or not resign():
                raise
            resigned = True
        except KlingInvalidRequestError as exc:
            if in_doubt and exc.code == 1201:
                # The resend collided with the task a lost attempt made (external ids are
                # unique per account): that task is the answer.
                found = await _probe(exchanger, external_id, attempt=attempt)
                if found is not None:
                    return found
            raise
        except KlingRateLimitError as exc:
            await budget.pause(exc)  # 1302/1303: refused before any task was made
        except (KlingTransportError, KlingServerError, KlingResponseError) as exc:
            in_doubt = True
            found = await _probe(exchanger, external_id, attempt=attempt)
            if found is not None:
                logger.debug("kling create: found task %s after %s", found.task_id, type(exc).__name__)
                return found
            if not exc.retryable:
                raise
            try:
                await budget.pause(exc)
            except KlingError as final:
                final.hint = (
                    f"{final.hint or ''} The task may still have been created: look it up by "
                    f"external_task_id {external_id!r} before creating it again."
                ).strip()
                raise
    raise AssertionError("unreachable: the retry budget ends the loop")  # pragma: no cover


async def _probe(exchanger: Exchanger, external_id: str, *, attempt: int) -> TaskData | None:
    """After a create of unknown fate: the task made under ``external_id``, or None.

    None also when the lookup itself failed in a retryable way: sending the create again is
    then still safe, because the vendor refuses a second task with the same external id.
    """
    path = task_path(external_id)
    try:
        data = await exchanger.send("GET", path, attempt=attempt, not_found=True)
    except KlingTaskNotFoundError:
        return None
    except KlingError as exc:
        if exc.retryable:
            return None
        raise
    task = task_from(data, where=f"GET {path}")
    if task.external_task_id not in (None, external_id):
        return None  # the id matched another task's task_id, not our external id
    return _with_external_id(task, external_id)


def _with_external_id(task: TaskData, external_id: str) -> TaskData:
    """Make sure the task carries the external id it was created with."""
    if task.task_info.external_task_id:
        return task
    return task.model_copy(update={"task_info": TaskInfo(external_task_id=external_id)})
