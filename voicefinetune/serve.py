"""`vft serve`: the REST API on one port (Swagger UI at /docs), composed for its backend.

This is where the parts meet (above them, like the `vft` command): on one machine the facade's local backend and
the inference server run in one process; on Kubernetes the facade alone, forwarding inference calls.
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from .settings import Settings

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from voicefinetune_inference import InferenceService

    from .lifecycle import JobGate

BACKENDS = ("local", "kubernetes")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vft serve",
        description="Serve the upstream-compatible fine-tuning and inference API. Configuration comes from the "
        "environment (see docs/configuration.md); the local backend keeps its jobs under VFT_DATA_DIR.",
    )
    parser.add_argument(
        "--host", default=None, help="interface to listen on (default 0.0.0.0; 127.0.0.1 with --dev)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: trainings run here as child processes, inference in-process (default); "
        "kubernetes: jobs become VoiceFinetune resources, inference is forwarded to the inference Service",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument(
        "--dev",
        action="store_true",
        help="everything local, offline: tiny random models, an S3 server (moto) on loopback, a temporary data "
        "folder unless VFT_DATA_DIR is set (the local backend only)",
    )
    args = parser.parse_args(argv)
    if args.dev and args.backend != "local":
        parser.error("--dev runs the local backend")
    if args.host is None:
        args.host = "127.0.0.1" if args.dev else "0.0.0.0"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.dev:
        from .devtools.dev_server import dev_environment

        with dev_environment(args.host, args.port):
            return serve(args)
    return serve(args)


def serve(args: argparse.Namespace) -> int:
    from .facade.app import create_kubernetes_app
    from .http_server import run

    settings = Settings.from_env()
    app = create_local_app(settings) if args.backend == "local" else create_kubernetes_app(settings)
    run(app, settings, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0


class InProcessInference:
    """The inference server's endpoints inside the facade's app, started and stopped with it."""

    def __init__(self, service: InferenceService):
        self.service = service

    def router(self, job_gate: JobGate) -> APIRouter:
        from voicefinetune_inference import build_router

        return build_router(self.service, job_gate=job_gate)

    async def start(self) -> None:
        await self.service.start()

    async def stop(self) -> None:
        await self.service.stop()


def create_local_app(settings: Settings) -> FastAPI:
    """One machine: the local backend (job records on disk, `vft train` children) and the inference server
    in-process, sharing one ops log."""
    from voicefinetune_inference import InferenceService

    from .facade.app import create_app
    from .facade.local_backend import LocalBackend
    from .opslog import OpsLog
    from .storage import Storage

    storage = Storage(settings)
    opslog = OpsLog(settings.state_dir / "ops.jsonl")
    service = InferenceService(settings, storage, opslog)
    backend = LocalBackend(settings, storage, opslog, service.catalog, service.disk_keeper.prune_disk)
    app = create_app(settings, backend, InProcessInference(service))
    app.state.opslog = opslog
    app.state.inference_service = service
    return app
