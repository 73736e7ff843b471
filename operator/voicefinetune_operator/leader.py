"""Leader election over a ``coordination.k8s.io/v1`` Lease, so that of several operator processes (a rolling
upgrade, two replicas) exactly one reconciles.

The holder renews the Lease every third of its duration; a candidate takes it over once it has seen the same
record unchanged for a whole duration (timed on its own monotonic clock, as client-go does, so clock skew between
nodes does not matter). Every write carries the resourceVersion it was decided on, so two candidates cannot both
win. A holder that stops cleanly gives the Lease up at once; one that is killed loses it after the duration.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from voicefinetune.cluster.client import Conflict, KubeClient, KubeError, lease_path

log = logging.getLogger(__name__)


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_identity() -> str:
    """The pod's name (HOSTNAME) plus a random suffix: a restarted container is a new candidate."""
    return f"{os.environ.get('HOSTNAME') or 'vft-operator'}-{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self, kube: KubeClient, *, namespace: str, name: str, duration: float, identity: str | None = None
    ):
        self.kube = kube
        self.path = lease_path(namespace, name)
        self.collection = lease_path(namespace)
        self.name = name
        self.namespace = namespace
        self.duration = max(1.0, duration)
        self.identity = identity or default_identity()
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0

    @property
    def retry_period(self) -> float:
        return max(0.2, self.duration / 5)

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        announced = False
        while True:
            try:
                if await self.try_acquire():
                    log.info(
                        "leader election: %s holds Lease %s/%s", self.identity, self.namespace, self.name
                    )
                    return
            except KubeError as exc:
                log.warning(
                    "leader election: cannot read or write Lease %s/%s: %s", self.namespace, self.name, exc
                )
            if not announced:
                log.info(
                    "leader election: another operator holds Lease %s/%s; standing by",
                    self.namespace,
                    self.name,
                )
                announced = True
            await asyncio.sleep(self.retry_period)

    async def try_acquire(self) -> bool:
        lease = await self.kube.get(self.path)
        now = _micro_now()
        if lease is None:
            try:
                await self.kube.create(self.collection, self._lease(now, acquired=now, transitions=0))
            except Conflict:
                return False
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder != self.identity and holder and not self._expired(spec):
            return False
        acquired = spec.get("acquireTime") if holder == self.identity else now
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if holder == self.identity else 1)
        return await self._write(lease, self._lease(now, acquired=acquired, transitions=transitions)["spec"])

    def _expired(self, spec: dict[str, Any]) -> bool:
        record = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
            return False
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        return time.monotonic() - self._observed_at > duration

    async def renew_forever(self, lost: Callable[[], None]) -> None:
        """Keep the Lease; call ``lost`` once when it is gone (another process took it, or renewing kept failing
        for a whole duration)."""
        last_renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.duration / 3)
            try:
                lease = await self.kube.get(self.path)
                holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
                if lease is None or holder != self.identity:
                    log.error(
                        "leader election: Lease %s/%s is held by %s now", self.namespace, self.name, holder
                    )
                    lost()
                    return
                if await self._write(lease, {"renewTime": _micro_now()}):
                    last_renewed = time.monotonic()
            except KubeError as exc:
                log.warning(
                    "leader election: renewing Lease %s/%s failed: %s", self.namespace, self.name, exc
                )
            if time.monotonic() - last_renewed > self.duration:
                log.error(
                    "leader election: could not renew Lease %s/%s for %.0f s",
                    self.namespace,
                    self.name,
                    self.duration,
                )
                lost()
                return

    async def release(self) -> None:
        """Give the Lease up (a clean stop), so that a standby takes over at once."""
        try:
            lease = await self.kube.get(self.path)
            if lease is not None and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                await self._write(lease, {"holderIdentity": None, "renewTime": None, "acquireTime": None})
        except KubeError as exc:
            log.warning("leader election: could not release Lease %s/%s: %s", self.namespace, self.name, exc)

    async def _write(self, lease: dict[str, Any], spec: dict[str, Any]) -> bool:
        patch = {"metadata": {"resourceVersion": lease["metadata"].get("resourceVersion")}, "spec": spec}
        try:
            return await self.kube.patch(self.path, patch) is not None
        except Conflict:
            return False

    def _lease(self, now: str, *, acquired: str | None, transitions: int) -> dict[str, Any]:
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(round(self.duration)),
                "acquireTime": acquired,
                "renewTime": now,
                "leaseTransitions": transitions,
            },
        }
