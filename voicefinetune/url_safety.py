"""Which addresses a server-side request may reach (server-side request forgery): the one policy for reference audio
URLs and webhook URLs. Private, loopback and link-local addresses are refused unless allowed
(``VFT_ALLOW_PRIVATE_URLS=1``, or an origin listed in ``VFT_TRUSTED_URL_ORIGINS``); cloud metadata addresses always are.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import SplitResult, urlsplit

from .settings import Settings

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")
)
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Origin = tuple[str, str, int]  # (scheme, lowercase host, port)


def url_origin(url: str | SplitResult) -> Origin | None:
    """(scheme, host, port) of an http(s) URL, default ports filled in; None for anything else."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else url
    except ValueError:  # malformed brackets
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        return None
    return scheme, parts.hostname.lower(), port


def trusted_origins(settings: Settings) -> frozenset[Origin]:
    """The origins of ``VFT_TRUSTED_URL_ORIGINS`` (comma-separated ``scheme://host:port``)."""
    origins = (url_origin(entry.strip()) for entry in settings.trusted_url_origins.split(","))
    return frozenset(origin for origin in origins if origin is not None)


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries and reaches (IPv4-mapped, 6to4 2002::/16, NAT64 64:ff9b::/96,
    Teredo's client), so that a wrapped loopback or private address is judged as what it is."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_PREFIX:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.teredo is not None:
        return address.teredo[1]
    return address


def address_refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why a connection to ``address`` is refused, or None when it is allowed."""
    address = embedded_ipv4(address)
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private:
        return None
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if address.is_multicast or address.is_unspecified or address.is_reserved or not address.is_global:
        return "not a public address"
    return None


async def resolve_checked(
    host: str, port: int, allow_private: bool, *, field: str, how_to_allow: str, error: type[Exception]
) -> IPAddress:
    """Resolve ``host`` and return an address to connect to, refusing the host if ANY of its addresses is refused:
    ``error`` (the caller's kind of bad input) names the request's ``field`` and says ``how_to_allow`` the host."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise error(f"{field} host {host!r} does not resolve: {exc}") from exc
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not addresses:
        raise error(f"{field} host {host!r} does not resolve")
    for address in addresses:
        reason = address_refusal(address, allow_private)
        if reason:
            raise error(f"{field} host {host!r} resolves to {address}, {reason}: refused ({how_to_allow})")
    return addresses[0]
