"""The trainer's progress token, delivered in a Secret of the resource's namespace (owned by the resource, so it
goes with it) instead of a plain value in the Job spec, which everyone allowed to read Jobs could copy.

The Secret's name carries a digest of the token: if the operator's key ever changes, the next Job gets a new
Secret rather than a stale token (the operator may create Secrets, never rewrite them).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from typing import Any

from voicefinetune.cluster.client import Conflict, KubeClient, secret_path
from voicefinetune_operator.crd import MANAGED_BY, NAME_LABEL, owner_reference
from voicefinetune_operator.jobs import PROGRESS_TOKEN_KEY, job_name, label_value


def progress_secret_name(resource_name: str, token: str) -> str:
    return f"{job_name(resource_name)}-progress-{hashlib.sha256(token.encode()).hexdigest()[:8]}"


def owned_secret(body: dict[str, Any], *, name: str, data: dict[str, str]) -> dict[str, Any]:
    """A Secret of the resource's namespace that goes with the resource (``data`` already base64)."""
    meta = body["metadata"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": name,
            "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, NAME_LABEL: label_value(meta["name"])},
            "ownerReferences": [owner_reference(body)],
        },
        "data": data,
    }


def progress_secret(body: dict[str, Any], token: str) -> dict[str, Any]:
    return owned_secret(
        body,
        name=progress_secret_name(body["metadata"]["name"], token),
        data={PROGRESS_TOKEN_KEY: base64.b64encode(token.encode()).decode()},
    )


async def ensure_progress_secret(kube: KubeClient, body: dict[str, Any], token: str) -> str:
    """Create the resource's progress-token Secret (an existing one of that name holds the same token)."""
    manifest = progress_secret(body, token)
    with contextlib.suppress(Conflict):
        await kube.create(secret_path(body["metadata"]["namespace"]), manifest)
    return manifest["metadata"]["name"]
