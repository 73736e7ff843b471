"""`vft inference [--host H] [--port P]`: run the inference server alone."""

from __future__ import annotations

import argparse
import logging

DEFAULT_PORT = 8000  # the original service's port; the facade and the operator pass theirs explicitly


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vft inference",
        description="Serve fine-tuned voices, voice design and voice clone (configured by the environment: "
        "DEVICE, GPU_MAX_MODELS, GPU_IDLE_TIMEOUT, GPU_MAX_CONCURRENCY, E2E_*, VFT_*).",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)

    from voicefinetune.http_server import run
    from voicefinetune.settings import Settings
    from voicefinetune_inference.app import create_app

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = Settings.from_env()
    run(create_app(settings), settings, host=args.host, port=args.port, log_level=args.log_level)
    return 0
