"""Dataset clips are checked from their headers before decoding: over 2 channels or over 48 kHz is refused."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from voicefinetune.dataset import DatasetError, open_dataset


def wav(seconds: float, rate: int, channels: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros((int(seconds * rate), channels), dtype=np.float32), rate, format="WAV")
    return buffer.getvalue()


def dataset(path: Path, clip: bytes) -> Path:
    line = json.dumps({"audio": "./data/a.wav", "text": "Hello there.", "ref_audio": "./data/ref.wav"})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.jsonl", line)
        archive.writestr("data/a.wav", clip)
        archive.writestr("data/ref.wav", wav(2.0, 24_000, 1))
    return path


@pytest.mark.parametrize(
    ("clip", "expected"),
    [
        (wav(1.0, 24_000, 3), "audio './data/a.wav' has 3 channels; at most 2 (mono or stereo) are accepted"),
        (wav(1.0, 96_000, 1), "audio './data/a.wav' is sampled at 96000 Hz; at most 48000 Hz is accepted"),
    ],
)
def test_clips_beyond_the_header_limits_are_refused(tmp_path, clip, expected):
    with pytest.raises(DatasetError) as caught:
        open_dataset(dataset(tmp_path / "ds.zip", clip), tmp_path / "dataset")
    assert expected in str(caught.value)
