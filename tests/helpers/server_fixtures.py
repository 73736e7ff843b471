"""Fixtures that start real servers for a test module (`vft serve`, `vft inference`) and a dataset zip to train on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.servers import Server, free_port, server_environment
from voicefinetune.devtools.sample_data import make_dataset_zip
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage


@pytest.fixture(scope="module")
def served(tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[Server]:
    """A `vft serve` shared by a test module, with its own bucket (created) and data dir."""
    root = tmp_path_factory.mktemp("serve")
    env = server_environment(
        root / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-facade-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_models.root,
    )
    Storage(Settings.from_env(env)).ensure_bucket()
    server = Server(env=env, port=free_port(), log_path=root / "serve.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def dataset_zip(tmp_path_factory) -> Path:
    """A small dataset zip in the dataset-maker layout (4 clips)."""
    return make_dataset_zip(tmp_path_factory.mktemp("dataset") / "voice_dataset.zip", count=4)


API_KEYS = "k,rotated-k2"


@pytest.fixture(scope="module")
def served_with_key(tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[Server]:
    """A `vft serve` like ``served`` that requires an API key (VFT_API_KEY="k,rotated-k2": two keys, as in a rotation)."""
    root = tmp_path_factory.mktemp("serve-key")
    env = server_environment(
        root / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-facade-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_models.root,
    )
    env["VFT_API_KEY"] = API_KEYS
    Storage(Settings.from_env(env)).ensure_bucket()
    server = Server(env=env, port=free_port(), log_path=root / "serve.log").start()
    yield server
    server.stop()


SMALL_UPLOAD_CAP = 600_000


@pytest.fixture(scope="module")
def served_small_upload_cap(tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[Server]:
    """A `vft serve` like ``served`` with VFT_MAX_UPLOAD_BYTES=600000."""
    root = tmp_path_factory.mktemp("serve-cap")
    env = server_environment(
        root / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-facade-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_models.root,
    )
    env["VFT_MAX_UPLOAD_BYTES"] = str(SMALL_UPLOAD_CAP)
    Storage(Settings.from_env(env)).ensure_bucket()
    server = Server(env=env, port=free_port(), log_path=root / "serve.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def inference_served(tmp_path_factory, s3_endpoint: str, tiny_models) -> Iterator[str]:
    """A real standalone `vft inference` (tiny models, moto S3); yields its base URL."""
    root = tmp_path_factory.mktemp("inference")
    env = server_environment(
        root / "data",
        s3_endpoint=s3_endpoint,
        bucket=f"vft-inf-{uuid.uuid4().hex[:10]}",
        tiny_root=tiny_models.root,
    )
    Storage(Settings.from_env(env)).ensure_bucket()
    server = Server(env=env, port=free_port(), log_path=root / "inference.log", command="inference").start()
    yield server.url
    server.stop()
