"""Errors raised by the Kling client.

Every error carries what a caller needs to decide and what a person needs to act::

    KlingError                      message, hint, retryable, http_status, code, vendor_message, request_id
    ├── KlingConfigError            missing or unusable settings (no credentials, a template left in a key)
    ├── KlingValidationError        a request refused locally, before any credit is spent (field, value, rule)
    ├── KlingTransportError         no answer: connection refused, DNS, timeout
    │   └── KlingTimeoutError
    ├── KlingResponseError          an answer that is not the vendor's envelope (HTML, not JSON, no fields)
    └── KlingAPIError               the vendor answered with a non-zero code
        ├── KlingAuthError          1000-1004
        ├── KlingAccountError       1100-1102, 1304 (arrears, resource pack used up, IP whitelist)
        ├── KlingPermissionError    1103
        ├── KlingInvalidRequestError 1200-1203
        │   └── KlingTaskNotFoundError   1201 on a query ("Task not found")
        ├── KlingPolicyError        1300, 1301
        ├── KlingRateLimitError     1302, 1303 (retryable)
        └── KlingServerError        5000-5002 and unknown 5xx (retryable)

Secrets never appear in any of these: messages are built from the vendor's message and our own words.
"""

from __future__ import annotations

__all__ = [
    "CODE_HINTS",
    "KlingAPIError",
    "KlingAccountError",
    "KlingAuthError",
    "KlingConfigError",
    "KlingError",
    "KlingInvalidRequestError",
    "KlingPermissionError",
    "KlingPolicyError",
    "KlingRateLimitError",
    "KlingResponseError",
    "KlingServerError",
    "KlingTaskNotFoundError",
    "KlingTimeoutError",
    "KlingTransportError",
    "KlingValidationError",
    "api_error_for",
]

#: One line a person can act on, per vendor code.
CODE_HINTS: dict[int, str] = {
    1000: "Authentication failed: check KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY.",
    1001: "The Authorization header was empty: set KLING_API_KEY, or KLING_ACCESS_KEY and KLING_SECRET_KEY.",
    1002: "The credentials were refused: check the key for typos and that it belongs to this region's host.",
    1003: "The token is not valid yet: check that this machine's clock is right.",
    1004: "The token has expired: check that this machine's clock is right.",
    1100: "The Kling account is in an abnormal state: check it in the Kling console.",
    1101: "The Kling account is in arrears: top it up in the Kling console.",
    1102: "The resource pack is used up or expired: buy or renew one in the Kling console.",
    1103: "This key has no permission for this model or API: enable it in the Kling console.",
    1200: "The request parameters were refused: read the message and fix the named field.",
    1201: "The request parameters were refused, or the task id does not exist.",
    1202: "The method is not valid for this endpoint (a client bug: please report it).",
    1203: "The resource was not found (a client bug or a wrong base URL).",
    1300: "Refused by the platform's policy.",
    1301: "The prompt or an input image was refused by content policy: rephrase it or use another image.",
    1302: "Too many requests too fast: wait a little and try again.",
    1303: "Too many tasks at once for this resource pack: wait for running tasks to finish.",
    1304: "This IP address is not on the account's whitelist: add it in the Kling console.",
    5000: "The Kling service had an internal error: try again shortly.",
    5001: "The Kling service is under maintenance: try again later.",
    5002: "The Kling service timed out on its backlog: try again shortly.",
}


class KlingError(Exception):
    """Base of every error this client raises."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        retryable: bool = False,
        http_status: int | None = None,
        code: int | None = None,
        vendor_message: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.retryable = retryable
        self.http_status = http_status
        self.code = code
        self.vendor_message = vendor_message
        self.request_id = request_id
        #: Seconds the server asked us to wait (``Retry-After``), when it said so.
        self.retry_after: float | None = None

    def describe(self) -> str:
        """One paragraph for a person or a model: what happened, what to do, ids to quote."""
        parts = [self.message]
        if self.hint and self.hint not in self.message:
            parts.append(self.hint)
        if self.request_id:
            parts.append(f"(request id {self.request_id})")
        return " ".join(parts)


class KlingConfigError(KlingError):
    """Settings are missing or unusable; nothing was sent."""


class KlingValidationError(KlingError):
    """A request broke a documented rule and was refused before sending (no credit spent)."""

    def __init__(self, field: str, value: object, rule: str, *, hint: str | None = None) -> None:
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}={shown} is not allowed: {rule}", hint=hint)
        self.field = field
        self.value = value
        self.rule = rule


class KlingTransportError(KlingError):
    """The request got no answer (connection refused, DNS failure, reset)."""


class KlingTimeoutError(KlingTransportError):
    """The request got no answer within its timeout."""


class KlingResponseError(KlingError):
    """The answer was not the vendor's JSON envelope (HTML error page, not JSON, fields missing)."""


class KlingAPIError(KlingError):
    """The vendor answered with a non-zero ``code``."""


class KlingAuthError(KlingAPIError):
    """1000-1004: authentication failed."""


class KlingAccountError(KlingAPIError):
    """1100-1102 and 1304: the account cannot be charged or is not allowed from here."""


class KlingPermissionError(KlingAPIError):
    """1103: no permission for this model or API."""


class KlingInvalidRequestError(KlingAPIError):
    """1200-1203: invalid parameters, method or resource."""


class KlingTaskNotFoundError(KlingInvalidRequestError):
    """1201 on a query: no task with that task id or external id."""


class KlingPolicyError(KlingAPIError):
    """1300-1301: refused by policy or content safety."""


class KlingRateLimitError(KlingAPIError):
    """1302-1303: rate or concurrency limit; retrying later helps."""


class KlingServerError(KlingAPIError):
    """5000-5002 or another 5xx: the service failed; retrying later may help."""


_RETRYABLE_CODES = frozenset({1302, 1303, 5000, 5001, 5002})


def _class_for(code: int, http_status: int | None) -> type[KlingAPIError]:
    if 1000 <= code <= 1004:
        return KlingAuthError
    if code in (1100, 1101, 1102, 1304):
        return KlingAccountError
    if code == 1103:
        return KlingPermissionError
    if 1200 <= code <= 1203:
        return KlingInvalidRequestError
    if code in (1300, 1301):
        return KlingPolicyError
    if code in (1302, 1303):
        return KlingRateLimitError
    if 5000 <= code <= 5999 or (http_status is not None and http_status >= 500):
        return KlingServerError
    return KlingAPIError


def api_error_for(
    *,
    code: int,
    vendor_message: str,
    http_status: int | None,
    request_id: str | None,
    not_found: bool = False,
) -> KlingAPIError:
    """Build the right ``KlingAPIError`` subclass for a vendor answer.

    ``not_found`` marks a 1201 answer to a task query, which means "no such task".
    """
    cls: type[KlingAPIError] = _class_for(code, http_status)
    if not_found and code == 1201:
        cls = KlingTaskNotFoundError
    hint = CODE_HINTS.get(code)
    text = vendor_message.strip() or "no message"
    message = f"Kling API error {code}: {text}."
    retryable = code in _RETRYABLE_CODES or (
        http_status is not None and http_status in (429, 502, 503, 504) and code not in range(1000, 1305)
    )
    return cls(
        message,
        hint=hint,
        retryable=retryable,
        http_status=http_status,
        code=code,
        vendor_message=vendor_message,
        request_id=request_id,
    )
