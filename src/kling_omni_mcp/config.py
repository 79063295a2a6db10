"""Every setting, read once from the environment (``KLING_*``) and validated.

``load_settings()`` is called at start-up by the CLI, never at import time, so tests can set the
environment first. Secrets are ``SecretStr``: they print as ``**********`` in any repr or log.

Longer than 300 lines on purpose: every setting, its default, its range and the check that
refuses a bad value sit in one class, read once, so a reader (and the README's configuration
table) has one place to look; splitting settings by topic would put the same ``KLING_*`` prefix
and placeholder checks in several modules and make "what can be configured?" a search.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = [
    "DEFAULT_BASE_URL",
    "MAX_WAIT_SECONDS",
    "Settings",
    "SettingsError",
    "default_output_dir",
    "load_settings",
    "webhook_secret_problem",
]

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
MAX_WAIT_SECONDS = 900

# Marketplace snippets carry placeholders such as ${KLING_API_KEY} or {{api_key}}; users paste
# them unchanged. Sending one to the vendor would only earn an opaque 1002.
_TEMPLATE = re.compile(r"^\s*(\$\{[^}]*\}|\{\{[^}]*\}\}|<[^>]*>|\$[A-Z_][A-Z0-9_]*)\s*$")


class SettingsError(ValueError):
    """A setting has a value that cannot work; the message names the variable and the fix."""


#: Standard Webhooks secrets are 24 to 64 random bytes; fewer is guessable.
MIN_WEBHOOK_SECRET_BYTES = 24


def webhook_secret_problem(secret: str) -> str | None:
    """None for a usable ``whsec_<base64>`` secret; otherwise what is wrong (never the secret)."""
    import base64
    import binascii

    encoded = secret.removeprefix("whsec_")
    try:
        # Unpadded Base64 is accepted, as the standardwebhooks package itself does.
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        return (
            "is not a Standard Webhooks secret: expected whsec_ followed by Base64 (copy it unchanged from "
            "the Kling console)"
        )
    if len(raw) < MIN_WEBHOOK_SECRET_BYTES:
        return (
            f"decodes to {len(raw)} bytes; at least {MIN_WEBHOOK_SECRET_BYTES} are needed (copy the whole "
            "secret from the Kling console)"
        )
    return None


def default_output_dir() -> Path:
    """``<the user's pictures folder>/kling``; platformdirs knows where that is on each OS."""
    from platformdirs import user_pictures_dir

    return Path(user_pictures_dir()) / "kling"


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """The server's configuration. Each field is the env var ``KLING_<FIELD>`` unless noted."""

    model_config = SettingsConfigDict(env_prefix="KLING_", extra="ignore", frozen=True)

    # --- vendor access -------------------------------------------------------------------
    api_key: SecretStr | None = Field(default=None, description="API key, sent as `Bearer <key>`.")
    access_key: SecretStr | None = Field(default=None, description="Access key (JWT issuer).")
    secret_key: SecretStr | None = Field(default=None, description="Secret key that signs the JWT.")
    api_base_url: str = Field(default=DEFAULT_BASE_URL, description="Vendor API base URL.")
    http_timeout: float = Field(default=30.0, gt=0, le=300, description="Seconds per HTTP request.")

    # --- behaviour ---------------------------------------------------------------------------
    simulate: bool = Field(default=False, description="Use the embedded simulator (no account, no cost).")
    sim_duration: float = Field(
        default=6.0, ge=0, le=600, description="Seconds a simulated task takes (simulate mode)."
    )
    wait_seconds: float = Field(
        default=45.0, ge=0, le=MAX_WAIT_SECONDS, description="Default wait_for_task budget."
    )
    poll_initial_seconds: float = Field(default=1.0, gt=0, le=600, description="First poll interval.")
    # 2.5 s: the finish-to-answer delay averages ~1.2 s at ~0.4 vendor requests/s per task for
    # typical 20-60 s tasks (docs/benchmarks.md); a 4 s ceiling averaged ~2 s.
    poll_max_seconds: float = Field(default=2.5, gt=0, le=600, description="Longest poll interval.")
    output_dir: Path = Field(default_factory=default_output_dir, description="Where results are saved.")
    input_dirs: Annotated[list[Path] | None, NoDecode] = Field(
        default=None, description="Folders local input images may come from (PATH-style list)."
    )
    # 512 is also the most the preview budget allows (media/previews.py): a larger side would
    # not fit the 60,000-character share of an answer, so larger values are refused, not ignored.
    preview_size: int = Field(default=512, ge=0, le=512, description="Longest side of inline previews.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    download_allow_private: bool = Field(
        default=False,
        description="Let result downloads reach loopback/private addresses (tests, self-hosted mirrors).",
    )

    # --- spending (budget.py) ------------------------------------------------------------------
    max_units_per_day: int | None = Field(
        default=None, ge=1, description="Ceiling on estimated units created per UTC day (unset: none)."
    )
    confirm_above_units: int | None = Field(
        default=None, ge=0, description="Ask the user to confirm a create estimated above this many units."
    )

    # --- remote serving (HTTP transport) ----------------------------------------------------
    mcp_auth_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Bearer tokens accepted on /mcp (comma-separated)."
    )
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra Host/Origin values allowed (comma-separated)."
    )
    public_url: str | None = Field(default=None, description="Public base URL, for vendor callbacks.")
    webhook_secret: SecretStr | None = Field(default=None, description="Standard Webhooks secret.")
    callback_allowed_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Extra URL prefixes callback_url may use (comma-separated)."
    )
    mcp_session_idle_seconds: float = Field(
        default=1800, gt=0, le=7 * 24 * 3600, description="An idle MCP session is closed after this."
    )
    mcp_max_sessions: int = Field(
        default=100, ge=1, le=100_000, description="Open MCP sessions one identity (token) may hold."
    )
    # Replicas (store/): unset, everything lives in this process. A secret: it may hold a password.
    redis_url: SecretStr | None = Field(default=None, description="redis:// URL of shared state.")

    # --- OAuth 2.1 sign-in (server/oauth.py) and signed download links (server/links.py) ----------
    mcp_oauth_audience: str | None = Field(
        default=None, description="This server's resource id in tokens (default <public_url>/mcp)."
    )
    mcp_oauth_scopes: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Scopes every OAuth token must carry (space/comma list)."
    )
    mcp_oauth_introspection_url: str | None = Field(default=None, description="RFC 7662 endpoint.")
    mcp_oauth_client_id: str | None = Field(default=None, description="Client id for introspection.")
    mcp_oauth_client_secret: SecretStr | None = Field(default=None, description="Its client secret.")
    # Declared after public_url and the audience: its validator reads them to derive the audience.
    mcp_oauth_issuer: str | None = Field(
        default=None, description="Authorization server issuer URL; turns OAuth sign-in on."
    )
    link_secret: SecretStr | None = Field(default=None, description="Key signing download links.")
    link_ttl_seconds: int = Field(
        default=86400, ge=10, le=30 * 86400, description="How long a download link stays valid."
    )
    shared_tasks: bool = Field(
        default=False, description="Every signed-in caller sees every task (off: each their own)."
    )

    @field_validator(
        "api_key",
        "access_key",
        "secret_key",
        "webhook_secret",
        "mcp_oauth_client_secret",
        "link_secret",
        mode="before",
    )
    @classmethod
    def _no_placeholders(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            if _TEMPLATE.match(value):
                raise ValueError(
                    "holds a template placeholder, not a real value: replace it with the key itself"
                )
            return value.strip()
        return value

    @field_validator("webhook_secret", mode="after")
    @classmethod
    def _webhook_secret_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = webhook_secret_problem(value.get_secret_value())
            if problem:
                raise ValueError(problem)
        return value

    @field_validator("callback_allowed_urls", mode="after")
    @classmethod
    def _http_prefixes(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not re.match(r"^https?://[^/\s@]+(/|$)", entry):
                raise ValueError(f"each entry must be an http(s) URL prefix without user-info, got {entry!r}")
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _redis_scheme(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            if not re.match(r"^(rediss?|unix)://", value.strip()):
                raise ValueError(
                    "must be a redis://, rediss:// or unix:// URL such as redis://localhost:6379/0"
                )
            return value.strip()
        return value

    @field_validator("max_units_per_day", "confirm_above_units", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # An MCP bundle passes an optional field the user left empty as "" (or, by some hosts,
        # as the unresolved ${user_config...}): both mean "not set".
        if isinstance(value, str) and (not value.strip() or _TEMPLATE.match(value)):
            return None
        if isinstance(value, float) and value.is_integer():
            return int(value)  # a manifest "number" field may arrive as 100.0
        if isinstance(value, str) and value.strip().endswith(".0") and value.strip()[:-2].isdigit():
            return int(value.strip()[:-2])
        return value

    @field_validator("input_dirs", mode="before")
    @classmethod
    def _split_path_list(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for p in value.split(os.pathsep) if p.strip()]
            return parts or None
        return value

    @field_validator("mcp_auth_tokens", "mcp_allowed_hosts", "callback_allowed_urls", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("mcp_oauth_scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in re.split(r"[\s,]+", value) if part]
        return value

    @field_validator("mcp_oauth_audience", "mcp_oauth_introspection_url", mode="after")
    @classmethod
    def _optional_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if not re.match(r"^https?://[^/\s]+", value.strip()):
            raise ValueError(f"must be an http(s) URL, got {value!r}")
        return value.strip()

    @field_validator("mcp_oauth_issuer", mode="after")
    @classmethod
    def _issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Kept exactly as written: clients compare the issuer as a string (RFC 8414 section 3.3).
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not re.match(r"^https?://[^/\s]+", value) or "?" in value or "#" in value:
            raise ValueError(f"must be the authorization server's issuer URL (https://...), got {value!r}")
        if not info.data.get("mcp_oauth_audience") and not info.data.get("public_url"):
            raise ValueError(
                "needs the server's own address: set KLING_PUBLIC_URL (the audience is then "
                "<KLING_PUBLIC_URL>/mcp) or KLING_MCP_OAUTH_AUDIENCE"
            )
        return value

    @field_validator("output_dir", mode="after")
    @classmethod
    def _expand_output(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("api_base_url", "public_url", mode="after")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().rstrip("/")
        if not value:
            return None
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"must be an http(s) URL such as {DEFAULT_BASE_URL}, got {value!r}")
        return value

    # --- derived -------------------------------------------------------------------------------
    @property
    def allowed_input_dirs(self) -> list[Path]:
        """Folders local inputs may come from: ``KLING_INPUT_DIRS`` or the home and output folders."""
        if self.input_dirs:
            return [p.expanduser() for p in self.input_dirs]
        return [Path.home(), self.output_dir]

    @property
    def oauth_audience(self) -> str | None:
        """The resource id OAuth tokens must name (RFC 8707): set, or ``<public_url>/mcp``."""
        if self.mcp_oauth_issuer is None:
            return None
        return self.mcp_oauth_audience or f"{self.public_url}/mcp"

    @property
    def has_credentials(self) -> bool:
        return self.api_key is not None or (self.access_key is not None and self.secret_key is not None)

    def credentials_problem(self) -> str | None:
        """None when the vendor can be called; otherwise what to set, in one or two sentences."""
        if self.simulate or self.has_credentials:
            return None
        if self.access_key is not None and self.secret_key is None:
            return "KLING_ACCESS_KEY is set but KLING_SECRET_KEY is not: set both, or set KLING_API_KEY."
        if self.secret_key is not None and self.access_key is None:
            return "KLING_SECRET_KEY is set but KLING_ACCESS_KEY is not: set both, or set KLING_API_KEY."
        return (
            "No Kling credentials are configured. Set KLING_API_KEY (or KLING_ACCESS_KEY and "
            "KLING_SECRET_KEY) in the server's environment, or start the server with --simulate "
            "to try it without an account."
        )

    def secret_values(self) -> list[str]:
        """Every secret value configured, for redaction filters."""
        secrets = [self.api_key, self.secret_key, self.webhook_secret]
        secrets += [self.mcp_oauth_client_secret, self.link_secret]
        out = [s.get_secret_value() for s in secrets if s]
        out += [t.get_secret_value() for t in self.mcp_auth_tokens]
        if self.redis_url is not None:
            from urllib.parse import urlsplit

            url = self.redis_url.get_secret_value()
            out += [url, urlsplit(url).password or ""]
        return [v for v in out if v]


def load_settings(**overrides: object) -> Settings:
    """Read the environment once; raise ``SettingsError`` naming each bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            lines.append(f"KLING_{field.upper()}: {err['msg']}")
        raise SettingsError("Invalid settings: " + "; ".join(lines)) from None
