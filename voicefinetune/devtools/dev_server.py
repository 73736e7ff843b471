"""`vft serve --dev`: the whole API on one machine with nothing to set up, from the demo's pieces: tiny random
models, an S3 server (moto) on loopback with its bucket, dummy S3 keys, and a temporary data folder (unless
``VFT_DATA_DIR`` is set). It prints the URL, the /docs address and curls to try."""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from ..settings import Settings
from ..storage import Storage
from .demo import DEMO_BUCKET, default_models_dir, demo_environment, s3_server
from .tiny_models import ensure_tiny_models

TRY_VOICE_DESIGN = '{"text": "Hello there.", "instruct": "A calm, warm voice", "language": "English"}'


def banner(url: str, s3_url: str, data_dir: Path, with_key: bool) -> str:
    key = ' -H "X-API-Key: $VFT_API_KEY"' if with_key else ""
    return "\n".join(
        [
            f"vft serve --dev: tiny random models (noise-like speech), S3 (moto) at {s3_url}, bucket {DEMO_BUCKET}, "
            f"data in {data_dir}",
            f"  API:   {url}",
            f"  Docs:  {url}/docs",
            f"  Try:   curl -s {url}/",
            f"         curl -s{key} {url}/voice-design -H 'Content-Type: application/json' "
            f"-d '{TRY_VOICE_DESIGN}' -o hello.wav",
        ]
    )


@contextmanager
def dev_environment(host: str, port: int) -> Iterator[None]:
    """Set up the local pieces and this process's environment for them; undone on exit."""
    saved = dict(os.environ)
    # uvicorn raises the SIGTERM it caught again once it has shut down: exit normally then, so the S3 server stops
    # and the temporary data folder is removed.
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with ExitStack() as stack:
        models_dir = Path(os.environ.get("VFT_TINY_MODELS_DIR") or default_models_dir())
        print(f"vft serve --dev: tiny models in {models_dir} (built on first use)", flush=True)
        ensure_tiny_models(models_dir)
        s3_url = stack.enter_context(s3_server())
        data_dir = Path(
            os.environ.get("VFT_DATA_DIR")
            or stack.enter_context(tempfile.TemporaryDirectory(prefix="vft-dev-"))
        )
        os.environ.update(demo_environment(data_dir, models_dir, s3_url))
        Storage(Settings.from_env()).ensure_bucket()
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        print(
            banner(f"http://{shown}:{port}", s3_url, data_dir, bool(os.environ.get("VFT_API_KEY"))),
            flush=True,
        )
        try:
            yield
        finally:
            os.environ.clear()
            os.environ.update(saved)
            signal.signal(signal.SIGTERM, previous)
