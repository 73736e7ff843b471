"""Incremental decoding of the 12 Hz speech tokenizer: waveform chunks while frames are still being generated.

The tokenizer's decoder is causal (left-padded convolutions, right-trimmed transposed convolutions, a causal
sliding-window transformer), so frames [s, e) decoded together with ``context`` frames before them give the same
samples as a full decode of everything, as long as ``context`` covers the decoder's receptive field. Each chunk
decodes its frames with up to ``context_frames`` earlier frames (all of them while fewer have been produced) and
keeps only its own samples: ``frames x samples_per_frame`` (1920 at 24 kHz). Chunks grow 1 -> 2 -> 4 -> 8 frames:
a small first chunk for early audio, larger ones for less decoder work per frame. Voice clone seeds the context
with the reference codes, as upstream's full decode does before it trims them.

The default context is the decoder transformer's sliding window plus a margin; with one transformer layer (the
tiny test checkpoints) that covers the receptive field exactly. With the real 8-layer decoder the receptive field
is larger in principle, so the chunks approximate the full decode (upstream itself decodes long outputs in
300-frame chunks with 25 frames of context).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

CHUNK_SCHEDULE = (1, 2, 4, 8)  # frames per chunk; the last size repeats
CONTEXT_MARGIN = 8  # frames beyond the sliding window, for the convolutions' reach


def default_context(decoder: Any) -> int:
    return int(getattr(decoder.config, "sliding_window", 64) or 64) + CONTEXT_MARGIN


class IncrementalDecoder:
    """Feed frames with `push` (codes [n, 16]); take waveform chunks (float32 numpy) as they become ready."""

    def __init__(
        self,
        decoder: Any,
        *,
        prefix: torch.Tensor | None = None,
        schedule: tuple[int, ...] = CHUNK_SCHEDULE,
        context_frames: int | None = None,
    ):
        self.decoder = decoder  # Qwen3TTSTokenizerV2Decoder (speech_tokenizer.model.decoder)
        self.samples_per_frame = int(decoder.total_upsample)
        self.context = default_context(decoder) if context_frames is None else int(context_frames)
        self.schedule = schedule
        groups = int(decoder.config.num_quantizers)
        self.codes = torch.empty(0, groups, dtype=torch.long)
        if prefix is not None:
            self.codes = prefix.detach().to("cpu", torch.long).reshape(-1, groups)
        self.done = len(self.codes)  # frames already turned into samples (or reference frames, never emitted)
        self.chunks = 0
        self.frames_emitted = 0

    def _next_size(self) -> int:
        return self.schedule[min(self.chunks, len(self.schedule) - 1)]

    def push(self, codes: torch.Tensor) -> list[np.ndarray]:
        self.codes = torch.cat(
            (self.codes, codes.detach().to("cpu", torch.long).reshape(-1, self.codes.shape[1]))
        )
        ready = []
        while len(self.codes) - self.done >= self._next_size():
            ready.append(self._decode(self.done + self._next_size()))
        return ready

    def flush(self) -> np.ndarray | None:
        """Whatever frames are left (fewer than the next chunk size), at the end of the utterance."""
        if len(self.codes) == self.done:
            return None
        return self._decode(len(self.codes))

    @torch.inference_mode()
    def _decode(self, end: int) -> np.ndarray:
        start = self.done
        first = max(0, start - self.context)
        window = self.codes[first:end].clamp(min=0)
        device = next(self.decoder.parameters()).device
        wav = self.decoder(window.T.unsqueeze(0).to(device))  # [1, 1, frames * samples_per_frame]
        wav = wav[0, 0, (start - first) * self.samples_per_frame :]
        self.done = end
        self.chunks += 1
        self.frames_emitted += end - start
        return wav.float().cpu().numpy()


def full_decode(decoder: Any, codes: torch.Tensor) -> np.ndarray:
    """The whole utterance in one decoder pass (the reference the chunks are compared with)."""
    with torch.inference_mode():
        device = next(decoder.parameters()).device
        wav = decoder(codes.clamp(min=0).T.unsqueeze(0).to(device))
    return wav[0, 0].float().cpu().numpy()
