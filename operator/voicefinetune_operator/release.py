"""`vft operator --release-finalizers`: take the operator's cleanup finalizer off every VoiceFinetune it served.

Run by the chart's pre-delete hook (and by hand after removing a namespace from ``operator.watchNamespaces``): with
no operator left to run the cleanup, a finalizer would keep a deleted resource Terminating forever. Released
resources delete at once; their Jobs go with them (owner references), their S3 checkpoints stay.
"""

from __future__ import annotations

import logging
from typing import Any

from voicefinetune.cluster.client import Conflict, KubeClient
from voicefinetune.cluster.resource import GROUP, PLURAL, VERSION, object_path
from voicefinetune_operator.crd import FINALIZER, RELEASED_ANNOTATION

log = logging.getLogger(__name__)


def _collection(namespace: str | None) -> str:
    return object_path(namespace) if namespace else f"/apis/{GROUP}/{VERSION}/{PLURAL}"


async def release_finalizers(kube: KubeClient, namespaces: tuple[str, ...] = ()) -> int:
    """How many resources lost the finalizer; ``namespaces`` empty: all of them."""
    released = 0
    for namespace in namespaces or (None,):
        for item in (await kube.list(_collection(namespace)))["items"]:
            if await _release(kube, item):
                released += 1
    return released


async def _release(kube: KubeClient, item: dict[str, Any]) -> bool:
    for _ in range(5):
        meta = item["metadata"]
        finalizers = meta.get("finalizers") or []
        if FINALIZER not in finalizers and (meta.get("annotations") or {}).get(RELEASED_ANNOTATION):
            return False
        # The annotation keeps a still-running operator from putting the finalizer back.
        patch = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {RELEASED_ANNOTATION: "true"},
                "finalizers": [f for f in finalizers if f != FINALIZER],
            }
        }
        try:
            await kube.patch(object_path(meta["namespace"], meta["name"]), patch)
        except Conflict:
            fresh = await kube.get(object_path(meta["namespace"], meta["name"]))
            if fresh is None:
                return False
            item = fresh
            continue
        log.info("released %s/%s", meta["namespace"], meta["name"])
        return True
    return False
