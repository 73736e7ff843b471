"""Shared helpers of the engine tests: tiny models loaded once per module, and the codes upstream hands its decoder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from voicefinetune_inference.engine import tts_model

from voicefinetune.settings import Settings

GREEDY = {"do_sample": False, "subtalker_dosample": False}
CPU = Settings(device="cpu", use_flash_attn=False)


def load_tiny(tiny_models, kind: str, engine: str = "fast") -> tts_model.LoadedModel:
    return tts_model.load(
        str(getattr(tiny_models, kind)), Settings(device="cpu", use_flash_attn=False, engine=engine)
    )


@contextlib.contextmanager
def decoded_codes(loaded: tts_model.LoadedModel) -> Iterator[list[torch.Tensor]]:
    """Collects the codes upstream passes to the speech tokenizer's decode (EOS cut, reference codes prepended)."""
    tokenizer = loaded.tts.model.speech_tokenizer
    real = tokenizer.decode
    seen: list[torch.Tensor] = []

    def capture(encoded):
        seen.extend(entry["audio_codes"].detach().clone() for entry in encoded)
        return real(encoded)

    tokenizer.decode = capture
    try:
        yield seen
    finally:
        del tokenizer.decode


def clone_prompt(loaded: tts_model.LoadedModel, seconds: float = 1.0):
    """A voice-clone prompt (in-context mode: reference codes and text) from a synthetic voiced clip."""
    rate = 24000
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(7)
    wave = sum(0.2 / k * np.sin(2 * np.pi * 140 * k * t) for k in range(1, 6)) + 0.01 * rng.standard_normal(
        t.size
    )
    return tts_model.clone_prompt(
        loaded, wave.astype(np.float32), sample_rate=rate, ref_text="A reference line.", use_xvec=False
    )
