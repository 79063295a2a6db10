"""The spending ledger: estimated units reserved per UTC day, shared by every process on a folder.

``Ledger`` is the interface (a Redis-backed one can replace the file for replicas). ``FileLedger``
keeps one small JSON file beside the sidecars, rewritten atomically (temp file + ``os.replace``)
under an exclusive lock on a ``.lock`` file, so several servers sharing the output folder count
together and a crash never leaves half a ledger.

The lock is written here with ``fcntl``/``msvcrt`` rather than taken from the ``filelock``
package: the project does not depend on it, and the need is a dozen lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

__all__ = ["LEDGER_FILE", "FileLedger", "Ledger", "LedgerError", "Reservation"]

logger = logging.getLogger(__name__)

LEDGER_FILE = "spending-ledger.json"
#: Days of history kept in the file; older ones are dropped on the next write.
_KEEP_DAYS = 31
_LOCK_TIMEOUT = 10.0
_LOCK_POLL = 0.02


class LedgerError(Exception):
    """The ledger cannot be read or written; the message names the file and the fix."""


@dataclass(frozen=True)
class Reservation:
    """The outcome of ``Ledger.reserve``: whether the units were booked, and the day's total before."""

    accepted: bool
    spent_before: int


class Ledger(Protocol):
    """Units per UTC day (``YYYY-MM-DD``), booked under a key unique to each create."""

    def spent(self, day: str) -> int:
        """Units booked on ``day``."""
        ...

    def reserve(self, day: str, key: str, units: int, ceiling: int | None) -> Reservation:
        """Book ``units`` under ``key`` unless the day's total would pass ``ceiling`` (atomic)."""
        ...

    def release(self, day: str, key: str) -> None:
        """Forget what ``key`` booked (its create failed)."""
        ...


@contextlib.contextmanager
def _exclusive(handle: IO[bytes], what: Path) -> Iterator[None]:
    """Hold an OS-level exclusive lock on ``handle`` (bounded wait)."""
    deadline = time.monotonic() + _LOCK_TIMEOUT
    while True:
        try:
            if sys.platform == "win32":
                import msvcrt

                msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise LedgerError(
                    f"The spending ledger {what} stayed locked for {_LOCK_TIMEOUT:g} s: another "
                    "kling-omni-mcp process holds it. Try again; if it persists, restart the servers."
                ) from None
            time.sleep(_LOCK_POLL)
    try:
        yield
    finally:
        if sys.platform == "win32":
            import msvcrt

            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class FileLedger:
    """A ``Ledger`` in ``<folder>/spending-ledger.json`` (blocking I/O: call it from a thread)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LEDGER_FILE
        self._lock_path = folder / (LEDGER_FILE + ".lock")
        # flock is per open file; this also orders threads of one process cheaply.
        self._thread_lock = threading.Lock()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = self._lock_path.open("a+b")
        except OSError as exc:
            raise LedgerError(
                f"Cannot open the spending ledger in {self.path.parent} ({exc.strerror}): "
                "set KLING_OUTPUT_DIR to a folder you can write."
            ) from None
        with self._thread_lock, handle, _exclusive(handle, self.path):
            yield

    def _load(self) -> dict[str, dict[str, int]]:
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Refusing every create over a damaged file would be worse than starting it again.
            logger.warning("The spending ledger %s is unreadable (%s); starting a new one", self.path, exc)
            return {}
        days: Any = raw.get("days") if isinstance(raw, dict) else None
        if not isinstance(days, dict):
            return {}
        return {
            day: {k: int(v) for k, v in entries.items() if isinstance(v, int)}
            for day, entries in days.items()
            if isinstance(entries, dict)
        }

    def _save(self, days: dict[str, dict[str, int]]) -> None:
        kept = dict(sorted(days.items())[-_KEEP_DAYS:])
        text = json.dumps({"version": 1, "days": kept}, indent=1, sort_keys=True)
        fd, temp = tempfile.mkstemp(dir=self.path.parent, prefix=".ledger-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise LedgerError(f"Cannot write the spending ledger {self.path} ({exc.strerror}).") from None

    def spent(self, day: str) -> int:
        with self._locked():
            return sum(self._load().get(day, {}).values())

    def reserve(self, day: str, key: str, units: int, ceiling: int | None) -> Reservation:
        with self._locked():
            days = self._load()
            entries = days.setdefault(day, {})
            before = sum(v for k, v in entries.items() if k != key)
            if ceiling is not None and before + units > ceiling:
                return Reservation(accepted=False, spent_before=before)
            entries[key] = units
            self._save(days)
            return Reservation(accepted=True, spent_before=before)

    def release(self, day: str, key: str) -> None:
        with self._locked():
            days = self._load()
            if days.get(day, {}).pop(key, None) is not None:
                self._save(days)
