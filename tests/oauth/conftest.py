"""A real authorization server (npm oidc-provider, tests/oauth/provider.mjs) on a free loopback port,
and the values the tests need from it: issuer, tokens, its signing keys, its JWKS request count."""

from __future__ import annotations

import json
import select
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import free_port
from tests.tooling import node_executable, node_package_dir

PROVIDER_SCRIPT = Path(__file__).with_name("provider.mjs")
SCOPE = "kling:images"
OTHER_RESOURCE = "https://photos.example.net/api"
CLIENT = ("kling-ci", "ci-secret-5c0b7a2e9d41f3")
#: Gets opaque tokens (RFC 7662 introspection path); also the server's own introspection client.
OPAQUE_CLIENT = ("kling-opaque", "opaque-secret-8e2d4b6a1c")
READY_SECONDS = 30


def new_key() -> tuple[dict[str, Any], Any]:
    """A fresh RSA signing key: (private JWK for the provider, the key object for minting)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    jwk.update(kid=uuid.uuid4().hex[:12], alg="RS256", use="sig")
    return jwk, key


@dataclass
class AuthServer:
    issuer: str
    audience: str
    mcp_port: int
    keys: list[tuple[dict[str, Any], Any]] = field(default_factory=list)

    def token(
        self, *, client: tuple[str, str] = CLIENT, resource: str | None = None, scope: str = SCOPE
    ) -> str:
        """An access token by the client-credentials grant, for ``resource`` (the audience by default)."""
        response = httpx2.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "scope": scope, "resource": resource or self.audience},
            auth=client,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    def mint(self, claims: dict[str, Any], *, key: Any = None, kid: str | None = None) -> str:
        """A token signed with the provider's current key (or ``key``): for claims the
        provider would never issue (expired, not yet valid)."""
        jwk, current = self.keys[-1]
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": self.audience, "sub": "minted", "iat": now, "exp": now + 300}
        payload.update(claims)
        headers = {"kid": kid or jwk["kid"], "typ": "at+jwt"}
        return jwt.encode(payload, key or current, algorithm="RS256", headers=headers)

    def jwks_requests(self) -> int:
        return int(httpx2.get(f"{self.issuer}/admin/stats", timeout=10).json()["jwks"])

    def rotate(self) -> None:
        """Sign with a brand-new key from now on (the old one disappears from the JWKS)."""
        self.keys.append(new_key())
        response = httpx2.post(f"{self.issuer}/admin/keys", json={"keys": [self.keys[-1][0]]}, timeout=10)
        assert response.status_code == 200


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[AuthServer]:
    """oidc-provider on loopback; the MCP server under test is to listen on ``mcp_port``."""
    node = node_executable()
    package = node_package_dir("oidc-provider")
    port, mcp_port = free_port(), free_port()
    server = AuthServer(
        issuer=f"http://127.0.0.1:{port}",
        audience=f"http://127.0.0.1:{mcp_port}/mcp",
        mcp_port=mcp_port,
        keys=[new_key()],
    )
    machine = {"grant_types": ["client_credentials"], "redirect_uris": [], "response_types": []}
    config = {
        "port": port,
        "issuer": server.issuer,
        "keys": [server.keys[0][0]],
        "clients": [
            {"client_id": CLIENT[0], "client_secret": CLIENT[1], "scope": f"{SCOPE} other", **machine},
            {"client_id": OPAQUE_CLIENT[0], "client_secret": OPAQUE_CLIENT[1], "scope": SCOPE, **machine},
        ],
        "resources": {
            server.audience: {"scope": f"{SCOPE} other", "opaque_for": [OPAQUE_CLIENT[0]]},
            OTHER_RESOURCE: {"scope": f"{SCOPE} other"},
        },
    }
    config_file = tmp_path / "provider.json"
    config_file.write_text(json.dumps(config))
    log = (tmp_path / "provider.log").open("w")
    proc = subprocess.Popen(
        [node, str(PROVIDER_SCRIPT), str(config_file), str(package)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], READY_SECONDS)
        line = proc.stdout.readline() if readable else ""  # "ready <port>", or "" if node died
        if not line.startswith("ready"):
            log.flush()
            pytest.fail(f"oidc-provider did not start: {(tmp_path / 'provider.log').read_text()[-2000:]}")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()
