"""The simulator's knobs, fixed when it is built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_MAX_BODY_BYTES", "SimulatorConfig"]

#: Ten 10 MB images in Base64 (x 4/3) plus the rest of the body fit well under this.
DEFAULT_MAX_BODY_BYTES = 160 * 1024 * 1024


@dataclass(frozen=True)
class SimulatorConfig:
    """How the simulated vendor behaves.

    ``api_keys`` and ``access_keys`` (access key -> secret key) are the accepted credentials; with
    neither configured the simulator runs open and accepts any non-empty Bearer token. All
    credentials belong to one simulated account (external task ids are unique across them).
    ``duration`` is the seconds a task takes from ``submitted`` to ``succeed``. ``image_scale``
    shrinks (or grows) result images, so tests can download small files.
    """

    api_keys: tuple[str, ...] = ()
    access_keys: Mapping[str, str] = field(default_factory=dict)
    duration: float = 5.0
    webhook_secret: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    concurrency_limit: int | None = None
    image_scale: float = 1.0
    #: Tasks kept in memory; the oldest finished ones are forgotten past this.
    max_tasks: int = 10_000
    #: Rendered result files kept in memory (each up to a few MB at 4k).
    render_cache_entries: int = 32
    #: Seconds each callback POST may take.
    callback_timeout: float = 5.0
    #: Callback deliveries in flight at once; tasks created beyond it get no callbacks.
    max_callback_workers: int = 1000
    #: Host names (besides loopback) /admin/* answers to; anything else is refused (DNS rebinding).
    admin_hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Callers pass lists and dicts; keep private immutable copies (the dataclass is frozen).
        object.__setattr__(self, "api_keys", tuple(self.api_keys))
        object.__setattr__(self, "access_keys", dict(self.access_keys))
        object.__setattr__(self, "admin_hosts", tuple(h.lower() for h in self.admin_hosts))
        if self.duration < 0:
            raise ValueError(f"duration must be >= 0 seconds, got {self.duration}")
        if self.max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if self.concurrency_limit is not None and self.concurrency_limit < 1:
            raise ValueError(f"concurrency_limit must be >= 1 or None, got {self.concurrency_limit}")
        if not 0 < self.image_scale <= 4:
            raise ValueError(f"image_scale must be in (0, 4], got {self.image_scale}")
        if self.max_tasks < 1 or self.render_cache_entries < 0 or self.max_callback_workers < 0:
            raise ValueError("max_tasks must be >= 1; cache and worker bounds must be >= 0")
        if self.callback_timeout <= 0:
            raise ValueError(f"callback_timeout must be positive, got {self.callback_timeout}")
        if any(not key for key in self.api_keys) or any(not a or not s for a, s in self.access_keys.items()):
            raise ValueError("api_keys and access_keys must not contain empty values")

    @property
    def open_mode(self) -> bool:
        """True when no credential is configured: any non-empty Bearer token is accepted."""
        return not self.api_keys and not self.access_keys
