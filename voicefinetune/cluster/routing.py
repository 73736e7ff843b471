"""Which inference replica serves a voice.

Each replica keeps its own VRAM and disk caches, so a voice should keep going to the replica that already holds
it. Rendezvous (highest-random-weight) hashing gives that without shared state: every caller that sees the same
replicas picks the same one for a voice, and when a replica comes or goes only the voices it owns move. The
replicas are what the inference Service's name resolves to (a headless Service: one address per ready pod);
the operator preloads a voice where the facade will later send its requests, because both use this module.

A full voice is keyed by its own id. A LoRA voice is keyed by the base checkpoint its adapter attaches to (and its
book, when it has one): a book's cast lands on one replica and shares one resident base model there, while
different books still spread over the replicas. The operator records the key it preloaded by in the resource's
``status.routingKey``; the facade routes by what it reads there.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)


ROUTING_KEY_FIELD = "routingKey"  # the VoiceFinetune status field that holds a Ready voice's key


def voice_key(voice: str, *, lora_base: str | None = None, book_id: str | None = None) -> str:
    """The rendezvous key of a voice: its id; for a LoRA voice (``lora_base``: its base checkpoint) the base
    model and the book, so the voices that can share a resident base model share a replica."""
    if lora_base is None:
        return voice
    return f"lora:{lora_base}" + (f"#{book_id}" if book_id else "")


def recorded_key(voice: str, resource: Mapping[str, Any] | None) -> str:
    """The key the operator recorded for ``voice`` (its resource's ``status.routingKey``), else the voice id."""
    recorded = ((resource or {}).get("status") or {}).get(ROUTING_KEY_FIELD)
    return recorded if isinstance(recorded, str) and recorded else voice


def rendezvous_order(key: str, endpoints: Sequence[str]) -> list[str]:
    """``endpoints`` from the best to the worst owner of ``key``."""
    return sorted(endpoints, key=lambda endpoint: _score(key, endpoint), reverse=True)


def pick(key: str, endpoints: Sequence[str]) -> str:
    if not endpoints:
        raise LookupError("no inference replica is available")
    return max(endpoints, key=lambda endpoint: _score(key, endpoint))


def _score(key: str, endpoint: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{key}\x00{endpoint}".encode()).digest()[:8], "big")


class EndpointResolver:
    """Base URLs of the inference replicas, from a setting that is either several comma-separated URLs (fixed
    replicas) or one URL whose host name resolves to every replica (re-resolved every ``ttl`` seconds)."""

    def __init__(self, setting: str, ttl: float = 5.0):
        self.urls = [url.strip().rstrip("/") for url in setting.split(",") if url.strip()]
        if not self.urls:
            raise ValueError("no inference URL is configured (VFT_INFERENCE_URL)")
        self.ttl = ttl
        self._cached: list[str] = []
        self._resolved_at = -float("inf")
        self._lock = asyncio.Lock()

    async def endpoints(self) -> list[str]:
        if len(self.urls) > 1 or not _needs_lookup(self.urls[0]):
            return list(self.urls)
        if time.monotonic() - self._resolved_at < self.ttl and self._cached:
            return list(self._cached)
        async with self._lock:
            if time.monotonic() - self._resolved_at >= self.ttl or not self._cached:
                self._cached = await self._resolve(self.urls[0]) or self._cached or list(self.urls)
                self._resolved_at = time.monotonic()
        return list(self._cached)

    async def _resolve(self, url: str) -> list[str]:
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(parts.hostname, parts.port or 80, type=socket.SOCK_STREAM)
        except OSError as exc:
            log.warning("cannot resolve the inference replicas of %s: %s", url, exc)
            return []
        addresses = sorted({str(info[4][0]) for info in infos if info[0] == socket.AF_INET}) or sorted(
            {str(info[4][0]) for info in infos}
        )
        port = f":{parts.port}" if parts.port else ""
        return [
            urlunsplit((parts.scheme, f"{_host(address)}{port}", parts.path, "", "")).rstrip("/")
            for address in addresses
        ]


def _needs_lookup(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return True
    return False


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
