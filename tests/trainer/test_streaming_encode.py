"""The trainer decodes clip by clip: a dataset's audio is decoded in its encoding batch, never all at once."""

from __future__ import annotations

import io
import json
import weakref
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from voicefinetune_trainer.codes import ENCODE_BATCH_SIZE, encode_samples
from voicefinetune_trainer.pipeline import TrainingPipeline, TrainRequest

from voicefinetune import dataset as dataset_module
from voicefinetune.dataset import DatasetError, open_dataset
from voicefinetune.settings import Settings

CLIPS = 3 * ENCODE_BATCH_SIZE
GROUPS = 4
RATES = (
    16000,
    22050,
    24000,
    44100,
    48000,
)  # resampled lengths must be known before decoding, to sort by them


def _wav(seconds: float, rate: int, seed: int) -> bytes:
    wave = 0.3 * np.random.default_rng(seed).standard_normal(int(seconds * rate))
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@pytest.fixture
def dataset_zip(tmp_path: Path) -> Path:
    lines, members = [], {"data/ref.wav": _wav(2.0, 48000, seed=99)}
    for i in range(CLIPS):
        members[f"data/c{i}.wav"] = _wav(
            0.4 + 0.37 * ((i * 7) % CLIPS) / CLIPS + i * 1e-4, RATES[i % 5], seed=i
        )
        lines.append(
            json.dumps({"audio": f"./data/c{i}.wav", "text": f"Clip {i}.", "ref_audio": "./data/ref.wav"})
        )
    path = tmp_path / "ds.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.jsonl", "\n".join(lines))
        for name, data in members.items():
            archive.writestr(name, data)
    return path


class FakeTokenizer:
    """Codes that depend on every sample of a clip; records how many decoded clips are alive at each call."""

    def __init__(self, alive: list[weakref.ref]):
        self.alive, self.peaks, self.batches = alive, [], []

    def get_input_sample_rate(self) -> int:
        return 24000

    def encode(self, waves: list[np.ndarray], sr: int) -> SimpleNamespace:
        self.peaks.append(sum(ref() is not None for ref in self.alive))
        self.batches.append([len(w) for w in waves])
        codes = []
        for wave in waves:
            frames = len(wave) // 1920
            values = np.abs(wave[: frames * 1920]).reshape(frames, -1).sum(axis=1) * 1000
            codes.append(
                torch.tensor(values, dtype=torch.long)[:, None].repeat(1, GROUPS) + torch.arange(GROUPS)
            )
        return SimpleNamespace(audio_codes=codes)


@pytest.fixture
def tracked(monkeypatch) -> tuple[SimpleNamespace, list[weakref.ref]]:
    alive: list[weakref.ref] = []
    real = dataset_module.load_audio

    def load_audio(path: Path, *args, **kwargs) -> np.ndarray:
        wave = real(path, *args, **kwargs)
        if path.name != "ref.wav":
            alive.append(weakref.ref(wave))
        return wave

    monkeypatch.setattr(dataset_module, "load_audio", load_audio)
    config = SimpleNamespace(talker_config=SimpleNamespace(num_code_groups=GROUPS))
    model = SimpleNamespace(model=SimpleNamespace(speech_tokenizer=FakeTokenizer(alive), config=config))
    return model, alive


def _pipeline(tmp_path: Path) -> tuple[TrainingPipeline, list[dict]]:
    events: list[dict] = []
    reporter = SimpleNamespace(emit=events.append, close=lambda: None)
    request = TrainRequest(
        job_id="stream", dataset="x.zip", speaker_name="Hero1", num_epochs=1, batch_size=1, lr=0.1
    )
    return TrainingPipeline(request, Settings.from_env({"VFT_DATA_DIR": str(tmp_path)}), reporter), events


def test_clips_are_decoded_batch_by_batch_with_the_same_codes(tmp_path, dataset_zip, tracked):
    model, alive = tracked
    dataset = open_dataset(dataset_zip, tmp_path / "dataset")
    pipeline, events = _pipeline(tmp_path)
    samples = pipeline.encode(dataset, model)

    tokenizer = model.model.speech_tokenizer
    assert len(alive) == CLIPS  # each clip decoded once...
    assert max(tokenizer.peaks) <= ENCODE_BATCH_SIZE  # ...and never more than a batch of them alive at once
    assert events[-1]["message"] == f"encoding audio codes of {CLIPS} clips"
    assert samples[0].ref_audio is samples[-1].ref_audio  # one copy of a shared reference

    streamed_batches = tokenizer.batches
    tokenizer.batches = []
    loaded = dataset.load()
    expected = encode_samples(model, [(c.text, c.audio, c.ref_audio) for c in loaded])
    assert tokenizer.batches == streamed_batches  # same length-sorted batches as with every clip in memory
    assert [s.text for s in samples] == [s.text for s in expected] == [f"Clip {i}." for i in range(CLIPS)]
    for got, want in zip(samples, expected, strict=True):
        assert torch.equal(got.audio_codes, want.audio_codes)
        assert np.array_equal(got.ref_audio, want.ref_audio)


def test_a_clip_that_fails_to_decode_names_its_line(tmp_path, dataset_zip, tracked, monkeypatch):
    model, _ = tracked
    dataset = open_dataset(dataset_zip, tmp_path / "dataset")
    real = dataset_module.load_audio

    def broken(path: Path, *args, **kwargs) -> np.ndarray:
        if path.name == "c5.wav":
            raise ValueError("bad frame")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(dataset_module, "load_audio", broken)
    with pytest.raises(DatasetError, match=r"^line 6: data/c5\.wav could not be decoded \(bad frame\)"):
        _pipeline(tmp_path)[0].encode(dataset, model)
