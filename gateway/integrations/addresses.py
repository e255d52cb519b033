"""Where a pull integration may connect: an allow-list of hosts, and no private addresses.

The endpoint URLs are the project's, but the call goes out from the gateway's network: without
these checks a project key could make the gateway read its cloud metadata service
(169.254.169.254), a database admin page on 10.x, or the gateway's own loopback ports.

A hostname is resolved once, every address it resolves to is checked, and the call then goes
to the checked address (``fetch`` pins it), so a DNS answer that changes between the check and
the connection (rebinding) cannot send it elsewhere.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from gateway.config import IntegrationsConfig
from gateway.errors import BadRequest

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Shared address space for carrier-grade NAT: not "private" to Python, not public either.
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class AddressRefused(Exception):
    """The host is not allow-listed, or an address it resolves to is not public."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="integration-dns")


def is_refused_address(address: Address) -> bool:
    """True for loopback, private, link-local, CGNAT, multicast, unspecified and reserved addresses
    (an IPv4 address written as IPv6, ``::ffff:10.0.0.1``, counts as the IPv4 one)."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 host: ::ffff:a.b.c.d, and 6to4's 2002:ab:cd::.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None and is_refused_address(embedded):
            return True
    return (address.is_loopback or address.is_link_local or address.is_private or address.is_multicast
            or address.is_unspecified or address.is_reserved or not address.is_global
            or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT))


def literal_address(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def host_allowed(host: str, allowed_hosts: list[str]) -> bool:
    if not allowed_hosts:
        return True
    host = host.lower().rstrip(".")
    for pattern in allowed_hosts:
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
            return True
        if host == pattern:
            return True
    return False


def check_endpoint_url(url: str, settings: IntegrationsConfig, field: str = "endpoint_url") -> None:
    """A 400 for a URL that can never be called: not http(s), no host, credentials in it, a host
    not allow-listed, or a literal address that is refused. (Hostnames are checked when called.)"""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise BadRequest(f"{field} is not a valid URL", code="invalid_endpoint_url", param=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest(f"{field} must be an http:// or https:// URL with a host", code="invalid_endpoint_url",
                         param=field)
    if parts.username is not None or parts.password is not None:
        raise BadRequest(f"{field} must not carry credentials; use auth_type and auth_secret",
                         code="invalid_endpoint_url", param=field)
    if port == 0:
        raise BadRequest(f"{field} has no usable port", code="invalid_endpoint_url", param=field)
    host = parts.hostname
    if not host_allowed(host, settings.allowed_hosts):
        raise BadRequest(f"{field}: host {host!r} is not in integrations.allowed_hosts", code="host_not_allowed",
                         param=field)
    address = literal_address(host)
    if address is not None and not settings.allow_private_networks and is_refused_address(address):
        raise BadRequest(f"{field}: {host} is a loopback, private, link-local or otherwise non-public address",
                         code="address_refused", param=field)


async def resolve_checked(host: str, port: int, settings: IntegrationsConfig) -> Address:
    """The address to connect to for ``host``: every address it resolves to must pass (one bad
    address refuses the host), and the first is used. Raises AddressRefused or OSError."""
    if not host_allowed(host, settings.allowed_hosts):
        raise AddressRefused("host_not_allowed", f"host {host!r} is not in integrations.allowed_hosts")
    literal = literal_address(host)
    if literal is not None:
        addresses: list[Address] = [literal]
    else:
        # getaddrinfo blocks: on threads of its own, so a slow resolver never stalls the event loop,
        # nor the loop's shared pool, which resolves the provider hosts every turn depends on (a
        # timed-out pull leaves its lookup running: here it occupies one of these threads only).
        infos = await asyncio.get_running_loop().run_in_executor(
            _RESOLVER, functools.partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM))
        addresses = list(dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos))
        if not addresses:
            raise OSError(f"{host} resolved to no address")
    if not settings.allow_private_networks:
        for address in addresses:
            if is_refused_address(address):
                raise AddressRefused("address_refused", f"{host} resolves to a non-public address")
    return addresses[0]
