"""Training samples: 24 kHz clips (decoded batch by batch) turned into audio codes with the model's own speech tokenizer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voicefinetune.dataset import LazyAudio
from voicefinetune.schemas import SAMPLE_RATE

# Clips per speech-tokenizer call. Clips are sorted by length first, so a batch pads little.
ENCODE_BATCH_SIZE = 8

AUTO_LANGUAGE = "auto"


@dataclass
class Sample:
    """One training example.

    `audio_codes` is (frames, num_code_groups) long on CPU; `ref_audio` is the speaker reference (24 kHz mono
    float32) whose speaker-encoder embedding fills the speaker slot; `language` is "auto" (no language tag,
    like upstream's recipe) or a name from the model's `codec_language_id`.
    """

    text: str
    audio_codes: torch.Tensor
    ref_audio: np.ndarray
    language: str = AUTO_LANGUAGE


Audio = np.ndarray | LazyAudio  # a waveform, or one decoded only when its clip is encoded


def _length(audio: Audio) -> int:
    return audio.shape[0] if isinstance(audio, np.ndarray) else audio.samples


def _wave(audio: Audio, index: int, name: str) -> np.ndarray:
    """The waveform (decoded now when lazy), checked to be non-empty mono."""
    wave = audio if isinstance(audio, np.ndarray) else audio.decode()
    if wave.ndim != 1 or wave.size == 0:
        raise ValueError(f"item {index}: {name} must be a non-empty mono waveform, got shape {wave.shape}")
    return wave


def encode_samples(
    model: Any,
    items: Iterable[tuple[str, Audio, Audio]],
    *,
    batch_size: int = ENCODE_BATCH_SIZE,
    language: str = AUTO_LANGUAGE,
) -> list[Sample]:
    """(text, audio 24 kHz, ref audio 24 kHz) items → Samples, in the same order.

    `model` is a loaded `qwen_tts.Qwen3TTSModel`; its `speech_tokenizer` does the encoding, in batches of
    `batch_size` clips of similar length. A `LazyAudio` is decoded only when its batch is encoded and dropped
    right after, so at most one batch of clips' audio is in memory; only the codes and references are kept.
    """
    items = list(items)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    tokenizer = model.model.speech_tokenizer
    if tokenizer is None:
        raise ValueError(
            "the model has no speech tokenizer loaded (speech_tokenizer/ missing from its folder?)"
        )
    input_rate = tokenizer.get_input_sample_rate()
    if input_rate != SAMPLE_RATE:
        raise ValueError(
            f"speech tokenizer expects {input_rate} Hz audio; prepared clips are {SAMPLE_RATE} Hz"
        )
    num_groups = model.model.config.talker_config.num_code_groups

    for index, (text, audio, ref_audio) in enumerate(items):
        if not text.strip():
            raise ValueError(f"item {index}: empty text")
        for name, wave in (("audio", audio), ("ref_audio", ref_audio)):
            if isinstance(wave, np.ndarray):
                _wave(wave, index, name)

    codes: list[torch.Tensor | None] = [None] * len(items)
    refs: list[np.ndarray | None] = [None] * len(items)
    by_length = sorted(range(len(items)), key=lambda i: _length(items[i][1]))
    for start in range(0, len(by_length), batch_size):
        chunk = by_length[start : start + batch_size]
        waves = []
        for i in chunk:
            waves.append(_wave(items[i][1], i, "audio").astype(np.float32))
            refs[i] = _wave(items[i][2], i, "ref_audio").astype(np.float32, copy=False)
        encoded = tokenizer.encode(waves, sr=SAMPLE_RATE)
        del waves  # this batch's audio goes now; only its codes stay
        for i, clip_codes in zip(chunk, encoded.audio_codes, strict=True):
            codes[i] = clip_codes.detach().to("cpu", torch.long).clone()
        del encoded

    samples = []
    for index, ((text, _, _), clip_codes, ref_wave) in enumerate(zip(items, codes, refs, strict=True)):
        assert clip_codes is not None and ref_wave is not None
        if clip_codes.ndim != 2 or clip_codes.shape[1] != num_groups:
            raise ValueError(
                f"item {index}: expected codes of shape (frames, {num_groups}), got {tuple(clip_codes.shape)}"
            )
        if clip_codes.shape[0] == 0:
            raise ValueError(f"item {index}: audio too short to give one codec frame ({text[:40]!r})")
        samples.append(Sample(text, clip_codes, ref_wave, language))
    return samples
