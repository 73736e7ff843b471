"""Resampling to 24 kHz has one home, used by the dataset intake and by the inference server's engine."""

from __future__ import annotations

import numpy as np
import pytest

from voicefinetune.resampling import resampled_length, to_sample_rate


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
@pytest.mark.parametrize("seconds", [0.5, 1.0003])
def test_a_tone_keeps_its_pitch_and_the_length_is_known_before_decoding(rate, seconds):
    frames = round(rate * seconds)
    tone = np.sin(2 * np.pi * 440.0 * np.arange(frames) / rate).astype(np.float32)
    wave = to_sample_rate(tone, rate)
    assert wave.dtype == np.float32 and len(wave) == resampled_length(frames, rate)
    assert abs(len(wave) - 24000 * frames / rate) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 24000 / len(wave) - 440.0) <= 24000 / len(wave)


def test_speech_already_at_24_khz_and_empty_speech_pass_unchanged():
    wave = np.linspace(-1, 1, 2400, dtype=np.float32)
    assert np.array_equal(to_sample_rate(wave, 24000), wave)
    assert to_sample_rate([], 16000).shape == (0,)
