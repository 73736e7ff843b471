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

# Fixtures several areas share: real servers started per test module, and the emulated Kubernetes API server.
pytest_plugins = ["tests.helpers.server_fixtures", "tests.helpers.kubernetes_fixtures"]

# Every test has pyproject's 60 s (fixture setup included), except the end-to-end modules below, which train voices
# or drive real servers and operators: their tests get these limits (their module fixtures count against the first).
LONG_MODULES = {
    "facade/test_serve_end_to_end.py": 600,  # trains voices, runs the original pattern (up to 480 s)
    "inference/openai_api/test_openai_speech.py": 600,  # these four train a voice through a real `vft serve` (up to 300 s)
    "facade/test_ops_running.py": 600,
    "facade/test_delete_during_batch.py": 600,
    "facade/test_disk_full.py": 600,
    "facade/test_local_backend_recovery.py": 300,  # runs and restarts training jobs
    "facade/test_training_faults.py": 300,
    "facade/test_fuzz_openapi.py": 300,  # fuzzes two real servers
    "facade/test_readme_examples.py": 600,  # the README's examples: `vft serve --dev`, a training, chapters (~130 s)
    "facade/test_serve_dev.py": 180,  # `vft serve --dev` starts moto and loads tiny models (~40 s on 2 cores)
    "chapters/test_chapters.py": 300,  # a real `vft serve` renders chapters of up to 40 segments
    "chapters/test_chapter_resume.py": 300,  # kills and restarts a real `vft serve` mid-chapter
    "chapters/test_finetune_webhook.py": 600,  # trains a voice through a real `vft serve` (up to 300 s)
    "chart/test_checkov.py": 150,  # two checkov runs of 5-12 s each (~25 s measured with the machine busy)
    "operator/test_end_to_end.py": 600,  # trains and serves a voice through operator, facade and inference server
    "operator/test_operator.py": 300,  # real operators against KMock, waits of up to 90 s
    "operator/test_operator_ha.py": 300,
    "operator/test_namespaces.py": 300,
    "operator/test_inference_fleet.py": 300,
    "operator/test_lora_placement.py": 300,  # two `vft inference` replicas load models and speak four voices
    "operator/test_trainer_attention.py": 300,  # a `vft train` of the Job's command, with an operator and a facade
    "trainer/test_train_cli.py": 600,  # `vft train` subprocesses
    "trainer/test_lora_training.py": 600,  # `vft train --method lora` subprocesses
    "inference/engine/test_lora_rows.py": 240,  # 4-5 greedy generations per test; over 60 s on a loaded machine
    "inference/engine/test_continuous.py": 180,  # 2-3 generations of up to 60 frames per test (~55 s on a loaded machine)
    "inference/engine/test_cuda_graphs.py": 180,  # 3 eager rows, then 3 rows of replayed (CPU-recorded) frames (~35 s)
    "inference/openai_api/test_concurrent_streams.py": 180,  # 8 streams of 3 sentences through the service (~40-70 s)
    "inference/test_lora_serving.py": 240,  # up to 10 requests through the service per test
    "facade/test_lora_job.py": 600,  # trains a LoRA voice through a real `vft serve` (up to 300 s)
    "trainer/test_sft.py": 300,  # in-process training of the tiny model
    "trainer/test_compact_training.py": 300,
}
# pytest-timeout also counts a session fixture's setup against the test that first needs it: the first test (in run
# order, after deselection) to use one of these gets its build time on top of its own limit.
SESSION_SETUP_SECONDS = {"tiny_models": 120, "lora_voices": 120}  # lora_voices: three tiny LoRA trainings


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items) -> None:
    default = float(config.getoption("timeout", None) or config.getini("timeout") or 0)
    pending = dict(SESSION_SETUP_SECONDS)
    for item in items:
        module = item.nodeid.split("::")[0].removeprefix("tests/")
        marker = item.get_closest_marker("timeout")
        limit = marker.args[0] if marker is not None and marker.args else LONG_MODULES.get(module, default)
        extra = sum(pending.pop(name) for name in list(pending) if name in item.fixturenames)
        if limit and (extra or limit != default):
            item.add_marker(pytest.mark.timeout(limit + extra))


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


@pytest.fixture(scope="session")
def lora_voices(tiny_models, tmp_path_factory):
    """Three rank-2 LoRA voices trained on the tiny Base model (tests.helpers.lora_voices), for the serving and
    the operator's placement tests."""
    from tests.helpers.lora_voices import train_lora_voices

    return train_lora_voices(tiny_models.base, tmp_path_factory.mktemp("lora-voices"))


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
