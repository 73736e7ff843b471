"""Prometheus exposition shared by every server. Each part defines its own metrics next to its code,
all under the ``vft_`` namespace."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

NAMESPACE = "vft"


def exposition(registry=REGISTRY) -> tuple[bytes, str]:
    """(body, content type) for a /metrics endpoint."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
