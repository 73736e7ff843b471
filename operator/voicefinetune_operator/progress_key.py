"""The HMAC key of the trainers' progress tokens, found once when the operator starts: the configured one
(`VFT_OPERATOR_SECRET_KEY`), else the one in a Secret the operator manages itself (`VFT_OPERATOR_KEY_SECRET`, the
chart's way), else (a developer's machine) one kept in a file under the data folder.

A key rendered by the chart would change on every `helm template` (ArgoCD and other GitOps tools render without
a cluster to look the old one up), and every running trainer's token would stop working. So unless a key is
configured (`VFT_OPERATOR_SECRET_KEY`), the operator reads it from the Secret named by `VFT_OPERATOR_KEY_SECRET`
in its namespace, creating that Secret with a random key the first time; replicas racing to create it all end up
with the one that was created first.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

from voicefinetune.cluster.client import Conflict, KubeClient, secret_path
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import MANAGED_BY

log = logging.getLogger(__name__)

KEY = "secret-key"
KEY_FILE = "operator-secret-key"


async def progress_key(config: OperatorConfig, kube: KubeClient | None) -> str:
    """The key, from the first of its three places that the configuration names."""
    if config.secret_key:
        return config.secret_key
    if config.key_secret:
        if kube is None:
            raise RuntimeError(f"the key lives in Secret {config.key_secret}: a Kubernetes client is needed")
        return await secret_key(kube, namespace=config.namespace, name=config.key_secret)
    return stored_key(config.settings.state_dir / KEY_FILE)


def stored_key(path: Path) -> str:
    """The progress-token key kept in ``path`` (made on first use), so that a restarted operator still accepts the
    tokens of Jobs it made before; a fresh key for this process only when the file cannot be written."""
    try:
        key = path.read_text().strip()
        if key:
            return key
    except OSError:
        pass
    key = secrets.token_hex(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key)
        log.info("VFT_OPERATOR_SECRET_KEY is not set: progress tokens use the key kept in %s", path)
    except OSError as exc:
        log.warning(
            "VFT_OPERATOR_SECRET_KEY is not set and %s cannot be written (%s): progress tokens are valid for this "
            "process only (trainers of Jobs started before a restart cannot report progress)",
            path,
            exc,
        )
    return key


async def secret_key(kube: KubeClient, *, namespace: str, name: str) -> str:
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
