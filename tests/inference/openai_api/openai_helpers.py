"""Helpers for the OpenAI-compatible API tests: a servable voice on a `vft serve`, decoding every response format."""

from __future__ import annotations

import io
import shutil
import time

import av
import httpx
import numpy as np
import soundfile as sf

FORMATS = ("wav", "pcm", "mp3", "opus", "flac", "aac")
SPEAKER = "tiny_speaker"  # the speaker of the tiny custom_voice checkpoint


def add_voice(server, tiny_models, job_id: str) -> str:
    """The tiny custom_voice checkpoint where the trainer leaves one, registered (and loaded) as a fine-tuned voice."""
    folder = server.settings.job_dir(job_id) / "output" / "checkpoint-epoch-0"
    shutil.copytree(tiny_models.custom_voice, folder)
    response = httpx.post(
        f"{server.url}/voices/{job_id}", json={"speaker_name": SPEAKER, "preload": True}, timeout=120
    )
    assert response.status_code == 200, response.text
    return job_id


def decode(data: bytes, response_format: str) -> tuple[np.ndarray, int]:
    """(mono samples, sample rate) of a response: raw pcm is 16-bit 24 kHz by definition; WAV, MP3, Ogg Opus
    (libsndfile reports the stream's input rate) and FLAC through libsndfile; AAC through FFmpeg."""
    if response_format == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, 24000
    if response_format in ("opus", "wav", "mp3", "flac"):
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        return audio.reshape(-1), int(rate)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        return np.concatenate(frames).astype(np.float32), int(stream.codec_context.sample_rate)


def last_stream_record(server, after: float, timeout: float = 60.0) -> dict:
    """The newest `inference_stream` ops record that started after ``after`` (waits for it to be written)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        records = httpx.get(
            f"{server.url}/ops/history", params={"op_name": "inference_stream"}, timeout=10
        ).json()
        records = [r for r in records if r["started_at"] >= after]
        if records:
            return max(records, key=lambda r: r["started_at"])
        time.sleep(0.1)
    raise AssertionError(f"no inference_stream record after {after}")


def metric_value(server, name: str) -> float:
    """The sum of a metric's samples (all label sets) on the server's /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#") and (line[len(name)] in " {")
    )
