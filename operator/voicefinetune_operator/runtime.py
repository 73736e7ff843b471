"""Everything the operator runs besides Kopf's handlers, built once in the operator's event loop: the API
client, the status writer, the progress receiver (HTTP, with /metrics), the inference keeper loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from dataclasses import replace

from aiohttp import web

from voicefinetune.cluster.client import KubeClient
from voicefinetune.cluster.routing import EndpointResolver
from voicefinetune.security import auth_headers
from voicefinetune.webhooks import WebhookSender
from voicefinetune_operator.config import OperatorConfig
from voicefinetune_operator.events import EventRecorder
from voicefinetune_operator.fleet import InferenceFleet
from voicefinetune_operator.keeper import InferenceKeeper
from voicefinetune_operator.leader import LeaderElector
from voicefinetune_operator.metrics import PhaseCounter
from voicefinetune_operator.progress import ProgressThrottle, build_app
from voicefinetune_operator.progress_key import progress_key
from voicefinetune_operator.reconcile import Reconciler
from voicefinetune_operator.status_writer import StatusWriter

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, config: OperatorConfig, kube: KubeClient):
        self.config = config
        self.kube = kube
        self.writer = StatusWriter(kube, EventRecorder(kube), WebhookSender(config.settings))
        self.throttle = ProgressThrottle(self.writer.progress, config.progress_interval)
        self.fleet = InferenceFleet(
            EndpointResolver(config.inference_url), config.load_timeout, headers=auth_headers(config.settings)
        )
        self.reconciler = Reconciler(config, kube, self.writer, self.fleet, self.throttle, PhaseCounter())
        self.keeper = InferenceKeeper(kube, config, self.fleet, lambda: dict(self.reconciler.ready_voices))
        self._runner: web.AppRunner | None = None
        self._keeper_task: asyncio.Task | None = None
        self.elector = (
            LeaderElector(
                kube, namespace=config.namespace, name=config.lease_name, duration=config.lease_duration
            )
            if config.leader_election
            else None
        )
        self._renew_task: asyncio.Task | None = None

    @classmethod
    async def start(cls, config: OperatorConfig, kubeconfig: str | None = None) -> Runtime:
        kube = await KubeClient.connect(kubeconfig)
        config = replace(config, secret_key=await progress_key(config, kube))
        runtime = cls(config, kube)
        await runtime._serve()
        return runtime

    async def lead(self) -> None:
        """Wait to hold the leader Lease (when leader election is on), then keep the inference objects. Until
        then this process only serves /healthz, /metrics and progress reports."""
        if self.elector is not None:
            await self.elector.acquire()
            self._renew_task = asyncio.create_task(
                self.elector.renew_forever(_stop_this_process), name="lease"
            )
        self._keeper_task = asyncio.create_task(self.keeper.run(), name="inference-keeper")

    async def _serve(self) -> None:
        """The progress receiver and /metrics on the configured port. Outside a cluster, with no progress URL
        configured, a taken port falls back to a free one (the Jobs made from then on carry it); in a cluster the
        Service names the port, so reconciling goes on without progress reports and /metrics."""
        self._runner = web.AppRunner(build_app(self.config.secret_key, self.throttle), access_log=None)
        await self._runner.setup()
        wanted = self.config.port
        try:
            await web.TCPSite(self._runner, "0.0.0.0", wanted).start()
        except OSError as exc:
            if self.config.in_cluster or self.config.progress_base_url:
                log.error(
                    "cannot serve progress reports and /metrics on :%d (%s); reconciling goes on without them: "
                    "free the port or pick another with --port / VFT_OPERATOR_PORT",
                    wanted,
                    exc,
                )
                return
            await web.TCPSite(self._runner, "0.0.0.0", 0).start()
            log.warning(
                "port %d is taken (%s); serving progress reports and /metrics on a free port instead",
                wanted,
                exc,
            )
        port = _bound_port(self._runner, wanted)
        if port != self.config.port:
            self.config = replace(self.config, port=port)
            self.reconciler.config = self.config
        log.info(
            "progress receiver and /metrics on :%d (trainers report to %s)",
            port,
            self.config.progress_url_base,
        )

    async def stop(self) -> None:
        for task in (self._renew_task, self._keeper_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.reconciler.close()
        await self.throttle.close()
        if self.elector is not None and self._renew_task is not None:
            await self.elector.release()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.kube.close()


def _stop_this_process() -> None:
    """The Lease is lost: another operator reconciles now. Stop (Kubernetes restarts the container, which then
    stands by) rather than act alongside it."""
    os.kill(os.getpid(), signal.SIGTERM)


def _bound_port(runner: web.AppRunner, default: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return default
