"""Incremental decoding of the 12 Hz speech tokenizer: waveform chunks while frames are still being generated.

The tokenizer's decoder is causal (left-padded convolutions, right-trimmed transposed convolutions, a causal
sliding-window transformer), so a chunk of frames [s, e) decoded with enough earlier frames gives exactly the samples
a full decode of everything gives there. The decoder has two stages, run here separately with a context each:

- the sample-rate stage (upsampling and convolutions up to 1920 samples per frame) is where the cost is, and it
  reaches back only `conv_context` frames (10 for the released rates);
- the frame-rate stage (quantizer, a 3-tap causal conv, the transformer: ``layers`` x ``sliding_window - 1`` frames
  of reach) is cheap per frame: it sees its whole receptive field, `frame_context` frames (570 for the released
  decoder's 8 layers; 73 for the tiny checkpoints' one), before the first frame the sample-rate stage sees.

So chunks equal the full decode up to float rounding for any weights, at the cost of a short window in the costly
stage; bench/codec_context.py measures both contexts on the released decoder's shape (docs/benchmarks.md).

Chunks grow 1 -> 2 -> 4 -> 8 frames: a small first chunk for early audio, larger ones for less decoder work per
frame. Each chunk keeps only its own ``frames x samples_per_frame`` samples (1920 at 24 kHz). Voice clone seeds the
context with the reference codes, as upstream's full decode does before it trims them. `DecodeWorker` runs one
utterance's decoder on its own thread, so the generation loop hands a frame over and goes on."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

CHUNK_SCHEDULE = (1, 2, 4, 8)  # frames per chunk; the last size repeats
# The decoder's kernels (upstream's architecture, not its config): in the frame-rate stage a 3-tap pre-conv; in the
# sample-rate stage 7-tap convolutions (ConvNeXt blocks after each upsampling ratio, one before the upsample rates
# and one at the end; residual units with dilations 1, 3, 9 after each rate), and transposed convolutions twice as
# long as their stride after each rate (one input step back). Their reach, in samples at each stage's rate:
PRE_CONV_REACH = 2
CONV_REACH = 6
RESIDUAL_REACH = 6 * (1 + 3 + 9)


def frame_context(decoder: Any) -> int:
    """Earlier frames the frame-rate stage needs: its receptive field (pre-conv, then each layer's window)."""
    config = decoder.config
    return PRE_CONV_REACH + int(config.num_hidden_layers) * (int(config.sliding_window) - 1)


def conv_context(decoder: Any) -> int:
    """Earlier frames the sample-rate stage needs: its receptive field in frames, rounded up."""
    config = decoder.config
    rate, reach = 1, 0.0
    for ratio in config.upsampling_ratios:  # transposed convs as long as their stride, then a ConvNeXt block
        rate *= ratio
        reach += CONV_REACH / rate
    reach += CONV_REACH / rate
    for upsample in config.upsample_rates:
        reach += 1 / rate  # the transposed conv's overlap: one input step
        rate *= upsample
        reach += RESIDUAL_REACH / rate
    reach += CONV_REACH / rate
    return math.ceil(reach)


def frame_stage(decoder: Any, codes: torch.Tensor) -> torch.Tensor:
    """Codes [1, 16, frames] to the transformer's output [1, latent, frames], as the decoder's forward runs it."""
    hidden = decoder.pre_conv(decoder.quantizer.decode(codes)).transpose(1, 2)
    return decoder.pre_transformer(inputs_embeds=hidden).last_hidden_state.permute(0, 2, 1)


def sample_stage(decoder: Any, hidden: torch.Tensor) -> torch.Tensor:
    """The transformer's output [1, latent, frames] to the waveform [1, 1, samples], as the decoder's forward."""
    for blocks in decoder.upsample:
        for block in blocks:
            hidden = block(hidden)
    for block in decoder.decoder:
        hidden = block(hidden)
    return hidden.clamp(min=-1, max=1)


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
        self.frame_context = frame_context(decoder) if context_frames is None else int(context_frames)
        self.conv_context = conv_context(decoder)
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
        # the sample-rate stage's context frames need their own frame-rate context
        first = max(0, start - self.conv_context - self.frame_context)
        window = self.codes[first:end].clamp(min=0)
        device = next(self.decoder.parameters()).device
        hidden = frame_stage(self.decoder, window.T.unsqueeze(0).to(device))
        context = min(start - first, self.conv_context)
        wav = sample_stage(self.decoder, hidden[..., start - first - context :])
        wav = wav[0, 0, context * self.samples_per_frame :]
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


class DecodeWorker:
    """One utterance's `IncrementalDecoder` on a thread of its own: `push` hands frames over and returns at once; the
    chunks reach ``emit`` (on that thread) in order; `finish` decodes what is left, waits for the last chunk and ends
    the thread. Leaving a ``with`` block drops the frames not yet decoded (the consumer went away); a worker left
    without either decodes what it was handed, and its thread ends when the worker is collected."""

    def __init__(self, decoder: IncrementalDecoder, emit: Callable[[np.ndarray], None]):
        self.decoder = decoder
        self._emit = emit
        self._thread = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="vft-codec"
        )  # one thread: in order
        self._failed: BaseException | None = None  # written and read on that thread; `finish` reads it after

    def __enter__(self) -> DecodeWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.shutdown(wait=True, cancel_futures=True)

    def push(self, codes: torch.Tensor) -> None:
        # a copy: the generation loop may write its next frame into the same buffer
        self._thread.submit(self._run, self.decoder.push, codes.detach().clone())

    def finish(self) -> None:
        """The last, shorter chunk; returns once every chunk has been emitted, or raises what a decode raised."""
        self._thread.submit(self._run, self._tail).result()
        self._thread.shutdown()
        if self._failed is not None:
            raise self._failed

    def _tail(self) -> list[np.ndarray]:
        tail = self.decoder.flush()
        return [] if tail is None else [tail]

    def _run(self, decode: Callable[..., list[np.ndarray]], *args: Any) -> None:
        if self._failed is not None:  # after a failed decode the context is unknown: no chunk after it
            return
        try:
            chunks = decode(*args)
        except Exception as exc:  # noqa: BLE001 - raised again by `finish`, on the pushing thread
            self._failed = exc
            return
        for chunk in chunks:
            self._emit(chunk)
