"""Everything the operator runs besides Kopf's handlers, built once in the operator's event loop: the API
client, the status writer, the progress receiver (HTTP, with /metrics), the inference keeper loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from .config import OperatorConfig
from .events import EventRecorder
from .fleet import InferenceFleet
from .keeper import InferenceKeeper
from .kube import KubeClient
from .metrics import PhaseCounter
from .progress import ProgressThrottle, build_app
from .reconcile import Reconciler
from .routing import EndpointResolver
from .status_writer import StatusWriter

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, config: OperatorConfig, kube: KubeClient):
        self.config = config
        self.kube = kube
        self.writer = StatusWriter(kube, EventRecorder(kube))
        self.throttle = ProgressThrottle(self.writer.progress, config.progress_interval)
        self.fleet = InferenceFleet(EndpointResolver(config.inference_url), config.load_timeout)
        self.reconciler = Reconciler(config, kube, self.writer, self.fleet, self.throttle, PhaseCounter())
        self.keeper = InferenceKeeper(kube, config, self.fleet, lambda: dict(self.reconciler.ready_voices))
        self._runner: web.AppRunner | None = None
        self._keeper_task: asyncio.Task | None = None

    @classmethod
    async def start(cls, config: OperatorConfig, kubeconfig: str | None = None) -> Runtime:
        runtime = cls(config, await KubeClient.connect(kubeconfig))
        runtime._runner = web.AppRunner(build_app(config.secret_key, runtime.throttle), access_log=None)
        await runtime._runner.setup()
        try:
            await web.TCPSite(runtime._runner, "0.0.0.0", config.port).start()
            log.info("progress receiver and /metrics on :%d", config.port)
        except OSError as exc:  # reconciling goes on; only progress reports and /metrics are missing
            log.error("cannot serve progress reports and /metrics on :%d: %s", config.port, exc)
        runtime._keeper_task = asyncio.create_task(runtime.keeper.run(), name="inference-keeper")
        return runtime

    async def stop(self) -> None:
        if self._keeper_task is not None:
            self._keeper_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper_task
        await self.reconciler.close()
        await self.throttle.close()
        if self._runner is not None:
            await self._runner.cleanup()
        await self.kube.close()
