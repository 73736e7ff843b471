"""The HMAC key of the trainers' progress tokens, kept in a Secret the operator manages itself.

A key rendered by the chart would change on every `helm template` (ArgoCD and other GitOps tools render without
a cluster to look the old one up), and every running trainer's token would stop working. So unless a key is
configured (`VFT_OPERATOR_SECRET_KEY`), the operator reads it from the Secret named by `VFT_OPERATOR_KEY_SECRET`
in its namespace, creating that Secret with a random key the first time; replicas racing to create it all end up
with the one that was created first.
"""

from __future__ import annotations

import base64
import logging
import secrets

from voicefinetune.cluster.client import Conflict, KubeClient, secret_path
from voicefinetune_operator.crd import MANAGED_BY

log = logging.getLogger(__name__)

KEY = "secret-key"


async def progress_key(kube: KubeClient, *, namespace: str, name: str) -> str:
    """The key in Secret ``namespace/name``, made (with a random key) when it does not exist yet."""
    for _ in range(3):
        existing = await kube.get(secret_path(namespace, name))
        if existing is not None and (existing.get("data") or {}).get(KEY):
            return base64.b64decode(existing["data"][KEY]).decode()
        key = secrets.token_hex(32)
        manifest = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY},
            },
            "data": {KEY: base64.b64encode(key.encode()).decode()},
        }
        try:
            await kube.create(secret_path(namespace), manifest)
        except Conflict:
            continue  # another replica made it first: use theirs
        log.info("made the progress-token key Secret %s/%s", namespace, name)
        return key
    raise RuntimeError(f"Secret {namespace}/{name} exists but holds no {KEY!r}: delete it or set the key")
