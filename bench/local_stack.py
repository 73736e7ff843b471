"""The one-machine stack the REST benchmarks run on: a moto S3 server over HTTP, the tiny models, and the Settings
that point a service at both. Everything is removed on the way out."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A moto S3 server over HTTP on loopback: its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        moto.stop()


@contextlib.contextmanager
def local_stack(name: str, **settings: Any) -> Iterator[tuple[Path, Any, Any]]:
    """(work folder, tiny models, Settings) for the benchmark ``name``; ``settings`` override the defaults.
    ``VFT_TINY_MODELS_DIR`` reuses tiny models built before."""
    from voicefinetune.devtools.tiny_models import ensure_tiny_models
    from voicefinetune.settings import Settings

    work = Path(tempfile.mkdtemp(prefix=f"vft-bench-{name}-"))
    try:
        with moto_server() as endpoint:
            tiny_dir = Path(os.environ.get("VFT_TINY_MODELS_DIR") or work / "tiny")
            tiny = ensure_tiny_models(tiny_dir)
            yield (
                work,
                tiny,
                Settings(
                    device="cpu",
                    use_flash_attn=False,
                    tiny_models=True,
                    tiny_models_dir=tiny_dir,
                    s3_access_key="bench",
                    s3_secret_key="bench",
                    s3_bucket="bench",
                    s3_endpoint_url=endpoint,
                    gpu_idle_timeout=0,
                    **settings,
                ),
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
