"""Reference audio is checked from its header before decoding: a tiny FLAC declaring 60 s × 8 channels × 192 kHz
is a 400 and the server's peak memory barely moves."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def silent_flac(path: Path, *, seconds: float, channels: int, rate: int) -> Path:
    block = np.zeros((rate, channels), dtype=np.int16)
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as out:
        for _ in range(int(seconds)):
            out.write(block)
    return path


@pytest.fixture(scope="module")
def hostile_flac(tmp_path_factory) -> bytes:
    return silent_flac(
        tmp_path_factory.mktemp("flac") / "x.flac", seconds=60, channels=8, rate=192_000
    ).read_bytes()


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"seconds": 1, "channels": 3, "rate": 24_000}, "reference audio has 3 channels; at most 2"),
        (
            {"seconds": 1, "channels": 1, "rate": 96_000},
            "reference audio is sampled at 96000 Hz; at most 48000 Hz",
        ),
        ({"seconds": 61, "channels": 1, "rate": 8_000}, "reference audio lasts 61.0 s; at most 60 s"),
    ],
)
def test_reference_audio_beyond_the_limits_is_400(served, tmp_path, shape, message):
    data = silent_flac(tmp_path / "ref.flac", **shape).read_bytes()
    with served.client() as client:
        answer = client.post(
            "/voice-clone",
            json={
                "ref_audio_url": base64.b64encode(data).decode(),
                "text": "Hi.",
                "use_xvec": True,
                "upload_to_s3": False,
            },
        )
    assert answer.status_code == 400, answer.text
    assert answer.json()["detail"].startswith(message)


def test_a_93kb_flac_of_8_channels_at_192khz_is_400_with_flat_memory(served, hostile_flac):
    assert len(hostile_flac) < 200_000
    before = peak_rss_bytes(served.process.pid)
    with served.client() as client:
        answer = client.post(
            "/voice-clone",
            json={
                "ref_audio_url": base64.b64encode(hostile_flac).decode(),
                "text": "Hi.",
                "use_xvec": True,
                "upload_to_s3": False,
            },
        )
    grown = peak_rss_bytes(served.process.pid) - before
    assert answer.status_code == 400, answer.text
    assert (
        answer.json()["detail"] == "reference audio has 8 channels; at most 2 (mono or stereo) are accepted"
    )
    assert grown < 50 * 1024**2, f"peak RSS grew by {grown / 1024**2:.0f} MiB"
