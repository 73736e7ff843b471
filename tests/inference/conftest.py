"""Fixtures for the inference server: services on tiny models and moto S3, HTTP clients, voices to serve."""

from __future__ import annotations

import dataclasses
import io
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from fastapi import FastAPI
from voicefinetune_inference import InferenceService, build_router

from voicefinetune.opslog import OpsLog
from voicefinetune.settings import Settings
from voicefinetune.storage import Storage, checkpoint_prefix

TINY_SPEAKER = "tiny_speaker"

MakeService = Callable[..., Awaitable[InferenceService]]


@pytest.fixture
async def make_service(settings: Settings, storage: Storage) -> AsyncIterator[MakeService]:
    """make_service(**settings_overrides) -> a started InferenceService (stopped at teardown)."""
    started: list[InferenceService] = []

    async def make(**overrides) -> InferenceService:
        configured = dataclasses.replace(settings, **overrides)
        service = InferenceService(
            configured, Storage(configured), OpsLog(configured.state_dir / "ops.jsonl")
        )
        await service.start()
        started.append(service)
        return service

    yield make
    for service in started:
        await service.stop()


@asynccontextmanager
async def http_client(service: InferenceService, job_gate=None) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(build_router(service, job_gate))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://inference.test", timeout=120
    ) as client:
        yield client


def install_checkpoint(service: InferenceService, tiny_models, *, job_id: str, epoch: int = 0) -> Path:
    """A copy of the tiny custom_voice checkpoint where the trainer would leave it: jobs/{id}/output/checkpoint-epoch-N."""
    folder = service.settings.job_dir(job_id) / "output" / f"checkpoint-epoch-{epoch}"
    shutil.copytree(tiny_models.custom_voice, folder)
    return folder


async def add_voice(
    service: InferenceService, tiny_models, *, job_id: str, backed_up: bool = True, preload: bool = False
) -> Path:
    """Install a checkpoint for job_id, upload it to S3 when ``backed_up``, and register it."""
    folder = install_checkpoint(service, tiny_models, job_id=job_id)
    prefix = None
    if backed_up:
        prefix = checkpoint_prefix(job_id)
        service.storage.upload_dir(folder, prefix)
    await service.catalog.register(
        job_id, TINY_SPEAKER, checkpoint_path=str(folder), s3_prefix=prefix, preload=preload
    )
    return folder


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return audio, rate


def reference_wav(seconds: float = 1.0, rate: int = 24000) -> bytes:
    """A short voiced-sounding clip (harmonics + a little noise) as WAV bytes."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    wave = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 6)) + 0.01 * rng.standard_normal(
        t.size
    )
    buffer = io.BytesIO()
    sf.write(buffer, wave.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def no_storage_settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, s3_access_key=None, s3_secret_key=None)


@pytest.fixture
def kit():
    """The helpers above, for test modules (conftest is not importable under --import-mode=importlib)."""
    import types

    return types.SimpleNamespace(
        http_client=http_client,
        install_checkpoint=install_checkpoint,
        add_voice=add_voice,
        read_wav=read_wav,
        reference_wav=reference_wav,
        speaker=TINY_SPEAKER,
    )


@pytest.fixture
def wav_server():
    """A real HTTP server on 127.0.0.1 serving a reference WAV (and a few hostile answers); records requests."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    wav = reference_wav()
    requests: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requests.append(self.path)
            if self.path == "/ref.wav":
                self._answer(200, wav, "audio/wav")
            elif self.path == "/huge.wav":
                self.send_response(200)
                self.send_header("Content-Length", str(500 * 1024 * 1024))
                self.end_headers()
                self.wfile.write(b"RIFF")
            elif self.path == "/to-metadata":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
            elif self.path == "/to-ref":
                self.send_response(302)
                self.send_header("Location", "/ref.wav")
                self.end_headers()
            elif self.path == "/text":
                self._answer(200, b"this is not audio", "text/plain")
            else:
                self._answer(404, b"not found", "text/plain")

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    import types

    yield types.SimpleNamespace(
        url=f"http://127.0.0.1:{server.server_address[1]}", requests=requests, wav=wav
    )
    server.shutdown()
    server.server_close()
