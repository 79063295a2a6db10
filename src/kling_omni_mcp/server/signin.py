"""Put sign-in in front of ``/mcp`` with the SDK's own pieces.

The SDK's ``AuthenticationMiddleware`` + ``BearerAuthBackend`` verify the bearer token (static or
OAuth, see ``identity.SignInVerifier``), ``AuthContextMiddleware`` makes it readable with
``get_access_token()`` inside handlers, and ``RequireAuthMiddleware`` answers 401 (with
``resource_metadata`` when OAuth is on) or 403 ``insufficient_scope``. The SDK's session manager
binds each MCP session to the principal that opened it, so another token cannot use it.

With OAuth on, ``GET /.well-known/oauth-protected-resource/<audience path>`` (RFC 9728) tells
clients which authorization server to ask; it needs no token.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp.server.auth.middleware.auth_context import AuthContextMiddleware
from mcp.server.auth.middleware.bearer_auth import BearerAuthBackend, RequireAuthMiddleware
from mcp.server.auth.routes import build_resource_metadata_url, create_protected_resource_routes
from pydantic import AnyHttpUrl, ConfigDict, TypeAdapter
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from kling_omni_mcp.config import Settings
from kling_omni_mcp.server.identity import SignInVerifier, StaticTokenVerifier
from kling_omni_mcp.server.oauth import OAuthTokenVerifier

__all__ = ["SignIn", "build_sign_in", "exact_url"]

# RFC 8414 compares issuers as exact strings; a plain AnyHttpUrl turns "https://as.example" into
# "https://as.example/", and the SDK's own client then stops with "issuer mismatch".
_EXACT_URL: TypeAdapter[AnyHttpUrl] = TypeAdapter(AnyHttpUrl, config=ConfigDict(url_preserve_empty_path=True))


def exact_url(value: str) -> AnyHttpUrl:
    """``value`` as a URL object that prints back exactly as written (no slash added)."""
    return _EXACT_URL.validate_python(value)


@dataclass
class SignIn:
    """What ``build_http_app`` mounts: the guarded app and the routes that need no token."""

    app: ASGIApp
    public_routes: list[Route] = field(default_factory=list)
    oauth: OAuthTokenVerifier | None = None
    resource_metadata_url: str | None = None


def build_sign_in(app: ASGIApp, settings: Settings) -> SignIn:
    """``app`` behind the configured sign-in; ``app`` itself when none is configured."""
    scopes = list(settings.mcp_oauth_scopes)
    static = StaticTokenVerifier([t.get_secret_value() for t in settings.mcp_auth_tokens], scopes)
    oauth: OAuthTokenVerifier | None = None
    if settings.mcp_oauth_issuer is not None and settings.oauth_audience is not None:
        oauth = OAuthTokenVerifier(
            issuer=settings.mcp_oauth_issuer,
            audience=settings.oauth_audience,
            introspection_url=settings.mcp_oauth_introspection_url,
            client_id=settings.mcp_oauth_client_id,
            client_secret=(
                settings.mcp_oauth_client_secret.get_secret_value()
                if settings.mcp_oauth_client_secret
                else None
            ),
        )
    if oauth is None and not static:
        return SignIn(app=app)

    routes: list[Route] = []
    metadata_url: AnyHttpUrl | None = None
    if oauth is not None:
        resource = exact_url(oauth.audience)
        metadata_url = build_resource_metadata_url(resource)
        routes = create_protected_resource_routes(
            resource_url=resource,
            authorization_servers=[exact_url(oauth.issuer)],
            scopes_supported=scopes or None,
            resource_name="Kling Omni-Image",
        )
        root = "/.well-known/oauth-protected-resource"
        if routes[0].path != root:
            # Also at the root, for clients that look there before reading WWW-Authenticate.
            routes.append(Route(root, endpoint=routes[0].endpoint, methods=["GET", "OPTIONS"]))
    # The audience is checked by OAuthTokenVerifier (aud claim), not by the backend's
    # `resource_server_url` comparison: static tokens carry no resource at all.
    guarded: ASGIApp = RequireAuthMiddleware(app, scopes, metadata_url)
    guarded = AuthContextMiddleware(guarded)
    guarded = AuthenticationMiddleware(guarded, backend=BearerAuthBackend(SignInVerifier(static, oauth)))
    return SignIn(
        app=guarded,
        public_routes=routes,
        oauth=oauth,
        resource_metadata_url=str(metadata_url) if metadata_url else None,
    )
