"""Each row of a fused batch delivered at its own end, while the rest of the batch keeps generating.

The fast engine tells `RowDelivery.row_done` when a row reaches its EOS (or frame bound) before the others. The row's
codes are decoded there with the model's speech tokenizer, as upstream's post-processing decodes that row (for voice
clone: the reference codes first, then the same proportional trim), and the waveform goes to ``on_ready(row, wav)``.
The speech tokenizer's decoder is causal and upstream pads a batch on the right, so a row decoded alone is the row
of the batched decode. At the end `skipping_delivered` keeps upstream's batched decode from decoding those rows again
(they come back empty there; the caller already has them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from voicefinetune.resampling import to_sample_rate
from voicefinetune_inference.engine.tts_model import decode_replaced

# on_ready(row, waveform): float32 at 24 kHz, called in the generating thread
ReadyCallback = Callable[[int, np.ndarray], None]


class RowDelivery:
    """Decodes rows that end early and hands their waveforms on; ``references``: per row, the voice-clone reference
    codes upstream prepends before decoding (None for other rows and models)."""

    def __init__(self, tts: Any, on_ready: ReadyCallback, references: Sequence[Any] | None = None):
        self.tokenizer = tts.model.speech_tokenizer
        self.on_ready = on_ready
        self.references = list(references or [])
        self.delivered: set[int] = set()
        self._decode: Callable[[list[dict[str, Any]]], tuple[list[np.ndarray], int]] | None = (
            None  # the real one
        )

    def _reference(self, row: int) -> Any:
        return self.references[row] if row < len(self.references) else None

    def row_done(self, row: int, codes: torch.Tensor) -> None:
        """(fast engine callback) Row ``row`` ended with ``codes`` [frames, 16]: decode it now and hand it on."""
        reference = self._reference(row)
        if reference is not None:
            codes = torch.cat([reference.to(codes.device), codes], dim=0)
        if len(codes) == 0:  # upstream's batched decode gives an empty waveform to an empty row
            wav, rate = np.zeros(0, dtype=np.float32), int(self.tokenizer.get_output_sample_rate())
        else:
            decode = self._decode or self.tokenizer.decode
            wavs, rate = decode([{"audio_codes": codes}])
            wav = wavs[0]
        if reference is not None:  # upstream's trim of the reference audio, for this row
            wav = wav[int(int(reference.shape[0]) / max(int(codes.shape[0]), 1) * wav.shape[0]) :]
        self.delivered.add(row)
        self.on_ready(row, to_sample_rate(wav, rate))

    @contextlib.contextmanager
    def skipping_delivered(self) -> Iterator[None]:
        """Within this block upstream's batched decode leaves out delivered rows (an empty waveform in their place)."""
        tokenizer = self.tokenizer
        real = self._decode = tokenizer.decode

        def decode(encoded: list[dict[str, Any]]) -> tuple[list[np.ndarray], int]:
            wanted = [row for row in range(len(encoded)) if row not in self.delivered]
            rate = int(tokenizer.get_output_sample_rate())
            wavs: list[np.ndarray] = [np.zeros(0, dtype=np.float32) for _ in encoded]
            if wanted:
                decoded, rate = real([encoded[row] for row in wanted])
                for row, wav in zip(wanted, decoded, strict=True):
                    wavs[row] = wav
            return wavs, rate

        try:
            with decode_replaced(tokenizer, decode):
                yield
        finally:
            self._decode = None
