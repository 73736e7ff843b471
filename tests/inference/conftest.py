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
from voicefinetune.inference_server import InferenceService, build_router

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
        service = InferenceService(configured, Storage(configured), OpsLog(configured.state_dir / "ops.jsonl"))
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
    async with httpx.AsyncClient(transport=transport, base_url="http://inference.test", timeout=120) as client:
        yield client


def install_checkpoint(service: InferenceService, tiny_models, job_id: str, epoch: int = 0) -> Path:
    """A copy of the tiny custom_voice checkpoint where the trainer would leave it: jobs/{id}/output/checkpoint-epoch-N."""
    folder = service.settings.job_dir(job_id) / "output" / f"checkpoint-epoch-{epoch}"
    shutil.copytree(tiny_models.custom_voice, folder)
    return folder


async def add_voice(
    service: InferenceService, tiny_models, job_id: str, backed_up: bool = True, preload: bool = False
) -> Path:
    """Install a checkpoint for job_id, upload it to S3 when ``backed_up``, and register it."""
    folder = install_checkpoint(service, tiny_models, job_id)
    prefix = None
    if backed_up:
        prefix = checkpoint_prefix(job_id)
        service.storage.upload_dir(folder, prefix)
    await service.register_voice(job_id, TINY_SPEAKER, checkpoint_path=str(folder), s3_prefix=prefix, preload=preload)
    return folder


def read_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, rate = sf.read(io.BytesIO(data), dtype="float32")
    return audio, rate


def reference_wav(seconds: float = 1.0, rate: int = 24000) -> bytes:
    """A short voiced-sounding clip (harmonics + a little noise) as WAV bytes."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    wave = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 6)) + 0.01 * rng.standard_normal(t.size)
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
