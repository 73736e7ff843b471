"""Kubernetes Events on a VoiceFinetune (what `kubectl describe vft NAME` lists): one per transition."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from voicefinetune.cluster.client import KubeClient, KubeError, event_path
from voicefinetune_operator.crd import MANAGED_BY
from voicefinetune_operator.status import now

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"


def build_event(body: dict[str, Any], kind: str, reason: str, message: str, timestamp: str) -> dict[str, Any]:
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": body.get("apiVersion"),
            "kind": body.get("kind"),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": MANAGED_BY},
        "reportingComponent": f"voicefinetune.io/{MANAGED_BY}",
        "reportingInstance": os.environ.get("HOSTNAME", MANAGED_BY),
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
    }


class EventRecorder:
    def __init__(self, kube: KubeClient):
        self.kube = kube

    async def post(self, body: dict[str, Any], *, kind: str, reason: str, message: str) -> None:
        """Best effort: a lost Event must never fail a reconciliation."""
        timestamp = now()
        try:
            await self.kube.create(
                event_path(body["metadata"]["namespace"]), build_event(body, kind, reason, message, timestamp)
            )
        except KubeError as exc:
            log.warning("could not post event %s on %s: %s", reason, body["metadata"].get("name"), exc)
