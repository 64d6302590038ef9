"""Where a webhook may be POSTed: public addresses only (unless ``api.webhook_private_hosts``).

Checked twice. At registration, on the URL: an IP literal must be public, and a name must not
be one of the private kind (``localhost``, ``*.internal``, a single label ...), a trailing dot
(the same name to a resolver) included. At delivery, on what the name resolves to then: every
address must be public, and the connection goes to the address that was checked (the original
``Host`` header and TLS server name kept), so a name rebound between the check and the
connection is never followed. Redirects are not followed either.

Public means global in the IANA special-purpose registries, and none of the addresses that
embed or translate to another one (NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4
``2002::/16``, Teredo ``2001::/32``, IPv4-mapped and -compatible IPv6): their IPv4 part may be
private (``[64:ff9b::a9fe:a9fe]`` is 169.254.169.254 through a NAT64 gateway)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx

IP = ipaddress.IPv4Address | ipaddress.IPv6Address

TRANSLATED = tuple(
    ipaddress.ip_network(n)
    for n in ("64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "2001::/32", "::ffff:0:0/96", "::/96")
)
PRIVATE_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})
PRIVATE_SUFFIXES = (
    ".localhost",
    ".local",
    ".internal",
    ".localdomain",
    ".home.arpa",
    ".lan",
    ".intranet",
    ".corp",
    ".home",
    ".in-addr.arpa",
    ".ip6.arpa",
)


def public_address(ip: IP) -> bool:
    if ip.version == 6 and any(ip in net for net in TRANSLATED):
        return False
    return bool(ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_unspecified))


def refused_host(host: str) -> str | None:
    """Why a URL's host may not be a webhook target (None: it may, pending its addresses)."""
    name = host.strip("[]").rstrip(".").lower()
    if not name:
        return "the URL names no host"
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return None if public_address(ip) else f"{name} is not a public address"
    if name in PRIVATE_NAMES or name.endswith(PRIVATE_SUFFIXES) or "." not in name:
        return f"{name} is a local or private name"
    return None


class TargetRefused(httpx.ConnectError):
    """The target's name resolved to a non-public address (or to none)."""


Resolver = Callable[[str, int], Awaitable[list[IP]]]


async def resolve(host: str, port: int) -> list[IP]:
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found: list[IP] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


class PinnedTransport(httpx.AsyncBaseTransport):
    """Resolves each request's host itself, refuses it unless every address is public (when
    private hosts are not allowed), and connects to the checked address with the original Host
    header and, for https, the original name as TLS server name (SNI, and the name the
    certificate is verified against). Connections are never kept for another request."""

    def __init__(
        self,
        *,
        allow_private: bool,
        inner: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self.allow_private = allow_private
        self.inner = inner or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0), retries=0
        )
        self.resolver = resolver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        why = None if self.allow_private else refused_host(host)
        if why is not None:
            raise TargetRefused("webhook target refused", request=request)
        try:
            literal: IP | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        try:
            addresses = [literal] if literal is not None else await self.resolver(host, port)
        except OSError as exc:
            raise httpx.ConnectError("the webhook's host did not resolve", request=request) from exc
        if not addresses or not (self.allow_private or all(public_address(a) for a in addresses)):
            raise TargetRefused("webhook target refused", request=request)
        # The Host header was set from the original URL when the request was built.
        request.url = url.copy_with(host=str(addresses[0]))
        if url.scheme == "https" and literal is None:
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
