"""`vft serve`: the seed REST API on one port (Swagger UI at /docs)."""

from __future__ import annotations

import argparse
import logging

from ..settings import Settings

BACKENDS = ("local", "kubernetes")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="vft serve",
        description="Serve the seed-compatible fine-tuning and inference API. Configuration comes from the "
        "environment (see the README's table); the local backend keeps its jobs under VFT_DATA_DIR.",
    )
    parser.add_argument("--host", default="0.0.0.0", help="interface to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: trainings run here as child processes, inference in-process (default); "
        "kubernetes: jobs become VoiceFinetune resources, inference is forwarded to the inference Service",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn

    from .app import create_kubernetes_app, create_local_app

    settings = Settings.from_env()
    app = create_local_app(settings) if args.backend == "local" else create_kubernetes_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0
