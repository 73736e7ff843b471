"""Trainer test fixtures: synthetic speech clips, good and bad dataset zips, a progress endpoint, the environment
for `vft train` child processes."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from voicefinetune.devtools.sample_data import (
    BAD_DATASET_KINDS,
    Clip,
    reference_clip,
    speech_clips,
    write_bad_dataset_zip,
    write_dataset_zip,
)

# What the error must say for each defect of sample_data.BAD_DATASET_KINDS.
BAD_DATASET_FRAGMENTS: dict[str, tuple[str, ...]] = {
    "no-train-jsonl": ("missing train.jsonl",),
    "parent-member": ("../x.wav", "outside"),
    "absolute-member": ("/etc/x", "absolute"),
    "symlink-member": ("data/link.wav", "symlink"),
    "zip-bomb": ("data/huge.wav", "zip bomb"),
    "missing-wav": ("line 2", "./data/nope.wav", "missing"),
    "text-as-wav": ("line 2", "seg_00000002.wav", "could not be decoded"),
    "empty-text": ("line 2", "'text' is empty"),
    "invalid-json-line-3": ("line 3", "invalid JSON"),
}


def pytest_generate_tests(metafunc) -> None:
    if "bad_kind" in metafunc.fixturenames:
        metafunc.parametrize("bad_kind", BAD_DATASET_KINDS)


@pytest.fixture(scope="session")
def clips() -> list[Clip]:
    return speech_clips(4, seed=0)


@pytest.fixture(scope="session")
def ref_clip() -> Clip:
    return reference_clip(seed=0)


@pytest.fixture
def dataset_zip(tmp_path: Path, clips: list[Clip], ref_clip: Clip) -> Path:
    """4 clips in the dataset-maker layout."""
    return write_dataset_zip(tmp_path / "input" / "dataset.zip", clips, ref=ref_clip)


@dataclass(frozen=True)
class BadDataset:
    kind: str
    path: Path
    fragments: tuple[str, ...]


@pytest.fixture
def bad_dataset(bad_kind: str, tmp_path: Path, clips: list[Clip], ref_clip: Clip) -> BadDataset:
    path = write_bad_dataset_zip(bad_kind, tmp_path / "input" / f"{bad_kind}.zip", clips=clips, ref=ref_clip)
    return BadDataset(bad_kind, path, BAD_DATASET_FRAGMENTS[bad_kind])


@dataclass
class ProgressSink:
    """A local HTTP endpoint that records the progress events POSTed to it."""

    url: str = ""
    status: int = 200
    events: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)


def serve_progress_sink() -> tuple[ProgressSink, ThreadingHTTPServer]:
    sink = ProgressSink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            sink.events.append(json.loads(body))
            sink.authorizations.append(self.headers.get("Authorization"))
            self.send_response(sink.status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink.url = f"http://127.0.0.1:{server.server_address[1]}/progress"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return sink, server


@pytest.fixture
def progress_sink() -> Iterator[ProgressSink]:
    sink, server = serve_progress_sink()
    yield sink
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def module_progress_sink() -> Iterator[ProgressSink]:
    sink, server = serve_progress_sink()
    yield sink
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def trainer_env(tmp_path_factory, s3_endpoint: str, tiny_models) -> dict[str, str]:
    """Environment for `vft train` children of one test module: tiny models, CPU, a fresh bucket on moto."""
    from voicefinetune.settings import Settings
    from voicefinetune.storage import Storage

    data_dir = tmp_path_factory.mktemp("trainer-data")
    env = {
        **os.environ,
        "E2E_ACCESS_KEY": "testing",
        "E2E_SECRET_KEY": "testing",
        "E2E_BUCKET": f"vft-trainer-{os.getpid()}-{abs(hash(str(data_dir))) % 10**8}",
        "E2E_ENDPOINT_URL": s3_endpoint,
        "DEVICE": "cpu",
        "USE_FLASH_ATTN": "0",
        "VFT_DATA_DIR": str(data_dir),
        "VFT_TINY_MODELS": "1",
        "VFT_TINY_MODELS_DIR": str(tiny_models.root),
        "VFT_S3_MAX_ATTEMPTS": "2",
        "VFT_S3_CONNECT_TIMEOUT": "2",
        "HF_HUB_OFFLINE": "1",
    }
    for name in ("VFT_PROGRESS_URL", "VFT_PROGRESS_TOKEN"):
        env.pop(name, None)
    Storage(Settings.from_env(env)).ensure_bucket()
    return env


@pytest.fixture(scope="module")
def cpu_settings(tmp_path_factory):
    """CPU settings with a data folder of the test module's own."""
    from voicefinetune.settings import Settings

    data = tmp_path_factory.mktemp("data")
    return Settings.from_env({"DEVICE": "cpu", "USE_FLASH_ATTN": "0", "VFT_DATA_DIR": str(data)})


@pytest.fixture(scope="module")
def base_tts(tiny_models, cpu_settings):
    """The tiny Base model, loaded once per test module."""
    from voicefinetune.qwen import load_model

    return load_model(tiny_models.base, cpu_settings)
