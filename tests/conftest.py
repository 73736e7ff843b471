"""Fixtures every test area shares: a real S3 server (moto over HTTP), settings bound to it, tiny models."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from voicefinetune.settings import Settings  # noqa: E402
from voicefinetune.storage import Storage  # noqa: E402


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    """A moto S3 server on loopback for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Tiny random Base, VoiceDesign and CustomVoice checkpoints built once per session."""
    from voicefinetune.devtools.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def s3_environment(endpoint: str, bucket: str) -> dict[str, str]:
    return {
        "E2E_ACCESS_KEY": "testing",
        "E2E_SECRET_KEY": "testing",
        "E2E_BUCKET": bucket,
        "E2E_ENDPOINT_URL": endpoint,
    }


@pytest.fixture
def bucket_name() -> str:
    return f"vft-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def vft_environ(tmp_path: Path, s3_endpoint: str, bucket_name: str) -> dict[str, str]:
    """VFT configuration variables: storage on the moto server (a fresh bucket), a fresh data dir, CPU."""
    return {
        **s3_environment(s3_endpoint, bucket_name),
        "DEVICE": "cpu",
        "USE_FLASH_ATTN": "0",
        "VFT_DATA_DIR": str(tmp_path / "data"),
        "VFT_S3_MAX_ATTEMPTS": "2",
    }


@pytest.fixture
def tiny_environ(vft_environ: dict[str, str], tiny_models) -> dict[str, str]:
    return {**vft_environ, "VFT_TINY_MODELS": "1", "VFT_TINY_MODELS_DIR": str(tiny_models.root)}


@pytest.fixture
def settings(tiny_environ: dict[str, str]) -> Settings:
    """Settings with storage on the moto server, a fresh data dir, tiny models, CPU."""
    return Settings.from_env(tiny_environ)


@pytest.fixture
def storage(vft_environ: dict[str, str]) -> Storage:
    """Storage on the moto server with its bucket created (no models needed)."""
    store = Storage(Settings.from_env(vft_environ))
    store.ensure_bucket()
    return store


@pytest.fixture
def settings_env(tiny_environ: dict[str, str]) -> dict[str, str]:
    """The `settings` configuration as a full environment, for child processes (vft train, vft serve...)."""
    return {**os.environ, **tiny_environ}
