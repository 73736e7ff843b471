"""The Kopf handlers: thin, each hands the object to the ``Reconciler`` and turns "not now" into a Kopf retry."""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

import kopf

from voicefinetune.cluster.client import KubeError
from voicefinetune.cluster.resource import GROUP, PLURAL, VERSION
from voicefinetune.lifecycle import TERMINAL_PHASES
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.crd import FINALIZER, MANAGED_BY, RELEASED_ANNOTATION
from voicefinetune_operator.metrics import reconciling
from voicefinetune_operator.reconcile import RetryLater
from voicefinetune_operator.runtime import Runtime

RESOURCE = (GROUP, VERSION, PLURAL)
NOT_RELEASED = {RELEASED_ANNOTATION: kopf.ABSENT}  # handlers that need the finalizer skip released resources
JOB_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
POD_SELECTOR = f"app.kubernetes.io/component=trainer,app.kubernetes.io/managed-by={MANAGED_BY}"
RETRY_DELAY = 2.0
DELETE_RETRIES = 5


def _plain(body: Any) -> dict[str, Any]:
    return copy.deepcopy(dict(body))


async def _run(handler: str, step: Awaitable[None]) -> None:
    with reconciling(handler):
        try:
            await step
        except (RetryLater, KubeError) as exc:
            raise kopf.TemporaryError(str(exc), delay=RETRY_DELAY) from exc


def has_patterns(namespaces: tuple[str, ...]) -> bool:
    """Whether a namespace is a Kopf pattern (glob, negation, list) rather than an exact name."""
    return any(any(char in namespace for char in "*?!,[") for namespace in namespaces)


def configure_kopf(settings: kopf.OperatorSettings, namespaces: tuple[str, ...] = ()) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = (
        logging.WARNING
    )  # Kopf's own Events: warnings and errors only; ours cover the transitions
    settings.watching.connect_timeout = 60
    settings.networking.request_timeout = 60
    # Kopf's scanning lists and watches Namespaces and CRDs, which only namespace patterns need. Exact names (or
    # all namespaces) do without: RBAC then covers every call, and API servers that cannot list Namespaces (a
    # namespaced Role, a test emulator) work; the CRD must exist when the operator starts (the chart installs it).
    settings.scanning.disabled = not has_patterns(namespaces)
    # Only the operator's own Jobs and training pods come over the wire (the handlers' label filters run client-side).
    settings.watching.label_selectors["batch", "v1", "jobs"] = JOB_SELECTOR
    settings.watching.label_selectors["", "v1", "pods"] = POD_SELECTOR


def build_registry(
    config: OperatorConfig, kubeconfig: str | None = None, namespaces: tuple[str, ...] = ()
) -> kopf.OperatorRegistry:
    """The operator's handlers; ``namespaces`` are those watched (empty: all)."""
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
        return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure_kopf(settings, namespaces)
        memo.runtime = await Runtime.start(config, kubeconfig)
        # Kopf starts watching only once start-up is over: a standby operator waits here for the Lease.
        await memo.runtime.lead()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        if getattr(memo, "runtime", None) is not None:
            await memo.runtime.stop()

    @kopf.on.create(*RESOURCE, registry=registry, backoff=RETRY_DELAY)
    async def created(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _run("create", memo.runtime.reconciler.ensure_training_job(_plain(body)))

    @kopf.on.resume(*RESOURCE, registry=registry, backoff=RETRY_DELAY)
    async def resumed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _run("resume", memo.runtime.reconciler.resume(_plain(body)))

    @kopf.timer(
        *RESOURCE,
        registry=registry,
        interval=config.resync_interval,
        initial_delay=config.resync_interval,
        annotations=NOT_RELEASED,
        when=lambda status, **_: status.get("phase") not in TERMINAL_PHASES,
    )
    async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        await _run("resync", memo.runtime.reconciler.resync(_plain(body)))

    @kopf.on.event(*RESOURCE, registry=registry)
    async def observed(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
        if isinstance(event.get("object"), dict):
            memo.runtime.reconciler.observe(event.get("type") or "", event["object"])

    @kopf.on.delete(
        *RESOURCE, registry=registry, backoff=RETRY_DELAY, retries=DELETE_RETRIES, annotations=NOT_RELEASED
    )
    async def deleted(body: kopf.Body, retry: int, memo: kopf.Memo, **_: Any) -> None:
        last_attempt = retry >= DELETE_RETRIES - 1
        await _run("delete", memo.runtime.reconciler.delete(_plain(body), last_attempt))

    @kopf.on.event(
        "batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY}, registry=registry
    )
    async def job_changed(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
        if isinstance(event.get("object"), dict):
            # Event handlers are not retried: a failure here is picked up by the Job's next event or a resume.
            with reconciling("job"):
                await memo.runtime.reconciler.on_job(event.get("type") or "", copy.deepcopy(event["object"]))

    @kopf.on.event(
        "",
        "v1",
        "pods",
        labels={"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "trainer"},
        registry=registry,
    )
    async def pod_changed(event: Mapping[str, Any], memo: kopf.Memo, **_: Any) -> None:
        if isinstance(event.get("object"), dict):
            with reconciling("pod"):
                await memo.runtime.reconciler.on_pod(event.get("type") or "", copy.deepcopy(event["object"]))

    return registry
