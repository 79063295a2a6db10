"""Where a result download may connect: public addresses only, checked after DNS, every hop.

Result URLs come from the vendor's answer, so a compromised vendor (or a prompt-injected task
whose answer we relay) could point them at this machine (``127.0.0.1``), the home network
(``192.168.x``), or a cloud metadata service (``169.254.169.254``, ``fd00:ec2::254``) and have the
server fetch what is there. So before each hop, redirects included, the host is resolved and
every address it resolves to must be public.

Checking a name and then letting the HTTP library resolve it again leaves a window (DNS
rebinding: the first answer is public, the second is ``127.0.0.1``). ``pin`` closes it by
connecting to the very address it checked: the request URL carries the checked IP, while the
``Host`` header and the TLS server name (``sni_hostname``, also used for certificate checks) keep
the real host name, so virtual hosting and HTTPS verification work as before.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2

from .errors import OutputError

__all__ = ["METADATA_ADDRESSES", "DownloadGuard", "address_problem"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

#: Cloud metadata endpoints, refused by name even where a rule above would not catch them
#: (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba, Azure wire server, Oracle).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192")
)


def address_problem(ip: IPAddress) -> str | None:
    """Why a download must not connect to ``ip``, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:127.0.0.1 is 127.0.0.1; 6to4 and Teredo addresses carry an IPv4 one inside.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            problem = address_problem(embedded)
            if problem is not None or ip.ipv4_mapped is not None:
                return problem
    checks = (
        (ip in METADATA_ADDRESSES, "a cloud metadata address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_unspecified, "the unspecified address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private or unique-local address"),
        (ip.is_reserved, "a reserved address"),
        (not ip.is_global, "not a public address"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None


async def _system_resolver(host: str, port: int) -> Sequence[str]:
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class DownloadGuard:
    """Resolves and checks each download hop; see the module docstring.

    ``resolver`` and ``treat_as_public`` exist for tests, which can only serve on loopback: they
    let a test declare one loopback address "public" and resolve a made-up name to it.
    """

    resolver: Resolver = _system_resolver
    treat_as_public: frozenset[str] = field(default_factory=frozenset)
    resolve_timeout: float = 10.0

    async def pin(self, url: httpx2.URL, label: str) -> tuple[httpx2.URL, dict[str, str], dict[str, Any]]:
        """(URL to request, extra headers, request extensions) that reach a checked public address.

        Raises ``OutputError`` when the host does not resolve or any of its addresses is refused.
        """
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses = [str(literal)]
        else:
            try:
                with anyio.fail_after(self.resolve_timeout):
                    addresses = list(await self.resolver(host, port))
            except (OSError, TimeoutError):
                addresses = []
            if not addresses:
                raise OutputError(
                    f"The download of {label} names a host that does not resolve ({host}): try again."
                )
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            problem = None if address in self.treat_as_public else address_problem(ip)
            if problem is not None:
                raise OutputError(
                    f"The download of {label} was refused: {host} is {problem} ({ip}), and result links "
                    "must point to the public internet. Set KLING_DOWNLOAD_ALLOW_PRIVATE=true only if "
                    "you run your own mirror on such an address."
                )
        chosen = addresses[0]
        if literal is not None:
            return url, {}, {}
        headers = {"Host": host if url.port is None else f"{host}:{url.port}"}
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" else {}
        return url.copy_with(host=chosen), headers, extensions
