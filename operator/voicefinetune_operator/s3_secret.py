"""The S3 credentials of a training pod outside the operator's namespace.

Pods can only read Secrets of their own namespace, and the chart makes the S3 Secret in the release namespace
only. So before a resource in another namespace gets its Job, the operator copies the two S3 keys into a Secret
of the resource's namespace, owned by the resource (garbage-collected with it). Without a source to copy (an
operator run outside the chart) the pod references a Secret of the configured name in its own namespace, which
the user provides (if it is missing, the pod's ``CreateContainerConfigError`` is said on the resource). When the
copy is refused (RBAC) the resource fails at once with a message naming the Secret.
"""

from __future__ import annotations

import logging
from typing import Any

from voicefinetune.cluster.client import Conflict, KubeClient, KubeError, secret_path
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.jobs import job_name
from voicefinetune_operator.progress_secret import owned_secret

log = logging.getLogger(__name__)


def s3_secret_name(config: OperatorConfig, namespace: str, resource_name: str) -> str:
    """The S3 Secret a training pod in ``namespace`` reads: the configured one at home, else the resource's copy."""
    if namespace == config.namespace or not config.s3_keys:
        return config.s3_secret
    return f"{job_name(resource_name)}-s3"


class SecretUnavailable(RuntimeError):
    """The pod's S3 Secret cannot exist in its namespace; the message says which Secret and why."""


def secret_copy(source: dict[str, Any], body: dict[str, Any], *, config: OperatorConfig) -> dict[str, Any]:
    meta = body["metadata"]
    keys = (config.s3_secret_access_key, config.s3_secret_secret_key)
    data = {key: value for key, value in (source.get("data") or {}).items() if key in keys}
    return owned_secret(body, name=s3_secret_name(config, meta["namespace"], meta["name"]), data=data)


async def ensure_s3_secret(kube: KubeClient, config: OperatorConfig, body: dict[str, Any]) -> str:
    """The name of the Secret the resource's training pod should reference, copied there first when needed."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
    if namespace == config.namespace:
        return config.s3_secret
    target = s3_secret_name(config, namespace, name)
    # RBAC lets the operator read only the source Secret: an existing copy shows as a Conflict on create.
    source = await kube.get(secret_path(config.namespace, config.s3_secret))
    if source is None:
        log.warning(
            "%s/%s: no S3 Secret %s/%s to copy; the training pod reads Secret %s of its own namespace",
            namespace,
            name,
            config.namespace,
            config.s3_secret,
            config.s3_secret,
        )
        return config.s3_secret
    missing = [
        key
        for key in (config.s3_secret_access_key, config.s3_secret_secret_key)
        if key not in (source.get("data") or {})
    ]
    if missing:
        raise SecretUnavailable(
            f"the S3 Secret {config.namespace}/{config.s3_secret} has no key {', '.join(missing)}"
        )
    try:
        await kube.create(secret_path(namespace), secret_copy(source, body, config=config))
    except Conflict:
        return target
    except KubeError as exc:
        if exc.status in (401, 403, 422):
            raise SecretUnavailable(
                f"cannot create Secret {target} (a copy of {config.namespace}/{config.s3_secret}) in namespace "
                f"{namespace}: {exc}"
            ) from exc
        raise
    log.info(
        "%s/%s: copied the S3 Secret %s/%s to %s", namespace, name, config.namespace, config.s3_secret, target
    )
    return target
