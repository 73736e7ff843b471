"""Keeps the one inference Deployment and its Service as configured, and every Ready voice registered.

Level-triggered and periodic: each round creates what is missing, patches back what drifted (someone scaled or
edited it, or deleted it) and registers Ready voices on replicas that do not have them (a replica that was
rescheduled starts with an empty registry).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from voicefinetune.cluster.client import Conflict, KubeClient, deployment_path, service_path
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.fleet import InferenceFleet
from voicefinetune_operator.inference import (
    build_inference_deployment,
    build_inference_service,
    drift,
    ignoring_replicas,
    repair_patch,
)
from voicefinetune_operator.metrics import INFERENCE_REPAIRS

log = logging.getLogger(__name__)

# (namespace, name) -> (voice id, speaker name, S3 prefix) of the Ready voices
ReadyVoices = Callable[[], dict[tuple[str, str], tuple[str, str, str]]]


class InferenceKeeper:
    def __init__(
        self, kube: KubeClient, config: OperatorConfig, fleet: InferenceFleet, ready_voices: ReadyVoices
    ):
        self.kube = kube
        self.config = config
        self.fleet = fleet
        self.ready_voices = ready_voices
        self._owner: dict[str, Any] | None = None

    async def run(self) -> None:
        while True:
            try:
                await self.reconcile()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "keeping the inference Deployment failed; trying again in %.0f s",
                    self.config.repair_interval,
                )
            await asyncio.sleep(self.config.repair_interval)

    async def reconcile(self) -> None:
        if self.config.manage_inference:
            owner = await self._owner_reference()
            await self._keep(
                deployment_path(self.config.namespace), build_inference_deployment(self.config, owner)
            )
            await self._keep(service_path(self.config.namespace), build_inference_service(self.config, owner))
        await self._sync_voices()

    async def _keep(self, collection: str, desired: dict[str, Any]) -> None:
        kind, name = desired["kind"], desired["metadata"]["name"]
        actual = await self.kube.get(f"{collection}/{name}")
        if actual is None:
            try:
                await self.kube.create(collection, desired)
            except Conflict:
                return
            INFERENCE_REPAIRS.labels(kind, "created").inc()
            log.info("created the inference %s %s", kind, name)
            return
        autoscaled = kind == "Deployment" and self.config.inference_autoscaling
        differences = drift(ignoring_replicas(desired) if autoscaled else desired, actual)
        if any(path.startswith("spec.selector") for path in differences) and kind == "Deployment":
            # A Deployment's selector cannot change (an upgrade added the release label): replace it.
            await self.kube.delete(deployment_path(self.config.namespace, name), propagation="Background")
            INFERENCE_REPAIRS.labels(kind, "replaced").inc()
            log.info(
                "deleted the inference %s %s to change its selector; it is made again next round", kind, name
            )
            return
        if differences:
            await self.kube.patch(f"{collection}/{name}", repair_patch(desired, autoscaled=autoscaled))
            INFERENCE_REPAIRS.labels(kind, "patched").inc()
            log.info("patched the inference %s %s back: %s", kind, name, ", ".join(differences[:5]))

    async def _owner_reference(self) -> dict[str, Any] | None:
        """The operator's own Deployment owns the inference objects, so uninstalling the chart removes them."""
        if not self.config.owner_deployment:
            return None
        if self._owner is None:
            owner = await self.kube.get(deployment_path(self.config.namespace, self.config.owner_deployment))
            if owner is None:
                return None
            self._owner = {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
            }
        return self._owner

    async def _sync_voices(self) -> None:
        voices = self.ready_voices()
        if not voices:
            return
        for endpoint in await self.fleet.resolver.endpoints():
            try:
                have = await self.fleet.registered(endpoint)
            except Exception as exc:
                log.debug("cannot list the voices of %s: %s", endpoint, exc)
                continue
            for voice, speaker, prefix in voices.values():
                if voice not in have:
                    try:
                        await self.fleet.register_on(endpoint, voice, speaker_name=speaker, s3_prefix=prefix)
                        log.info("registered voice %s again on %s", voice, endpoint)
                    except Exception as exc:
                        log.warning("re-registering voice %s on %s failed: %s", voice, endpoint, exc)
