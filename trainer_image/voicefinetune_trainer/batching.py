"""The talker's training input layout: prepared samples → right-padded batches of token ids.

The input sequence mirrors what `Qwen3TTSForConditionalGeneration.generate` feeds the talker for a custom voice in
non-streaming mode, so training and inference see the same layout. Per position, a text channel and a codec
channel are summed:

    text : role(3) | pad ... pad, tts_bos | text tokens, tts_eos | pad     | pad × frames     | pad
    codec: -       | tags, SPK, codec_pad | codec_pad × (n + 1)  | bos     | sum of 16 codes  | eos

`tags` is nothink/think_bos/think_eos ("auto" language) or think/think_bos/<language>/think_eos; SPK is the
speaker-encoder embedding of the sample's reference audio. The talker's codebook-0 labels sit at the positions of
the tokens themselves (the model's `ForCausalLMLoss` shifts them once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

IGNORE_INDEX = -100
# "<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n": qwen_tts slices the ids the same way.
ROLE_TOKENS = 3
TRAILING_TOKENS = 5


def assistant_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class PreparedSample:
    """A sample as token ids: what `build_batch` needs (the benchmark builds these directly)."""

    role_ids: torch.Tensor  # (3,)
    text_ids: torch.Tensor  # (n,)
    codes: torch.Tensor  # (frames, num_code_groups)
    speaker_embedding: torch.Tensor  # (hidden,)
    language_id: int | None = None


@dataclass
class Batch:
    text_ids: torch.Tensor  # (B, L) text channel
    text_on: torch.Tensor  # (B, L) bool
    codec_ids: torch.Tensor  # (B, L) codec channel: control ids and codebook 0
    codec_on: torch.Tensor  # (B, L) bool
    sub_codes: torch.Tensor  # (B, L, G-1) codebooks 1.. at frame positions
    frame_on: torch.Tensor  # (B, L) bool: positions holding an audio frame
    labels: torch.Tensor  # (B, L) codebook-0 targets at their own positions, IGNORE_INDEX elsewhere
    attention_mask: torch.Tensor  # (B, L) long
    speaker_pos: torch.Tensor  # (B,)
    speaker_embeddings: torch.Tensor  # (B, hidden)
    # (row, column) of every frame position, row-major: static indices instead of boolean masks in the loss, so the
    # step has no data-dependent shapes (the memory benchmark runs it on fake tensors)
    frame_rows: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (N,)
    frame_cols: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))  # (N,)
    tokens: int = field(default=0)  # real (unpadded) positions, for throughput figures

    def to(self, device: torch.device | str) -> Batch:
        moved: dict[str, Any] = {
            name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for name, value in vars(self).items()
        }
        return Batch(**moved)


def sequence_length(sample: PreparedSample) -> int:
    """Positions of a sample's talker sequence (see `_sequence`)."""
    tags = 3 if sample.language_id is None else 4
    return ROLE_TOKENS + tags + 2 + sample.text_ids.shape[0] + 1 + 1 + sample.codes.shape[0] + 1


def _sequence(sample: PreparedSample, config: Any) -> dict[str, Any]:
    talker = config.talker_config
    if sample.language_id is None:
        tags = [talker.codec_nothink_id, talker.codec_think_bos_id, talker.codec_think_eos_id]
    else:
        tags = [
            talker.codec_think_id,
            talker.codec_think_bos_id,
            sample.language_id,
            talker.codec_think_eos_id,
        ]
    head = len(tags) + 2  # tags, speaker, codec_pad
    n_text = sample.text_ids.shape[0]
    frames = sample.codes.shape[0]
    length = ROLE_TOKENS + head + n_text + 1 + 1 + frames + 1

    text_ids = torch.full((length,), config.tts_pad_token_id, dtype=torch.long)
    codec_ids = torch.full((length,), talker.codec_pad_id, dtype=torch.long)
    codec_on = torch.ones(length, dtype=torch.bool)
    frame_on = torch.zeros(length, dtype=torch.bool)
    sub_codes = torch.zeros((length, sample.codes.shape[1] - 1), dtype=torch.long)
    labels = torch.full((length,), IGNORE_INDEX, dtype=torch.long)

    text_ids[:ROLE_TOKENS] = sample.role_ids
    codec_on[:ROLE_TOKENS] = False
    position = ROLE_TOKENS
    codec_ids[position : position + len(tags)] = torch.tensor(tags)
    speaker_pos = position + len(tags)
    codec_on[speaker_pos] = False
    text_ids[position + head - 1] = config.tts_bos_token_id  # beside the codec_pad that closes the head
    position += head
    text_ids[position : position + n_text] = sample.text_ids
    text_ids[position + n_text] = config.tts_eos_token_id
    position += n_text + 1
    codec_ids[position] = talker.codec_bos_id
    position += 1
    codec_ids[position : position + frames] = sample.codes[:, 0]
    sub_codes[position : position + frames] = sample.codes[:, 1:]
    frame_on[position : position + frames] = True
    labels[position : position + frames] = sample.codes[:, 0]
    position += frames
    codec_ids[position] = talker.codec_eos_token_id
    labels[position] = talker.codec_eos_token_id
    assert length == sequence_length(sample)
    return {
        "text_ids": text_ids,
        "codec_ids": codec_ids,
        "codec_on": codec_on,
        "sub_codes": sub_codes,
        "frame_on": frame_on,
        "labels": labels,
        "speaker_pos": speaker_pos,
        "length": length,
    }


def build_batch(samples: Sequence[PreparedSample], config: Any) -> Batch:
    """Right-padded batch of talker inputs for `samples` (`config` is the model's Qwen3TTSConfig)."""
    sequences = [_sequence(sample, config) for sample in samples]
    size, width = len(sequences), max(s["length"] for s in sequences)
    groups = samples[0].codes.shape[1]

    def padded(key: str, value: Any, shape: tuple[int, ...] = ()) -> torch.Tensor:
        out = torch.full((size, width, *shape), value, dtype=sequences[0][key].dtype)
        for row, seq in enumerate(sequences):
            out[row, : seq["length"]] = seq[key]
        return out

    attention = torch.zeros((size, width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        attention[row, : seq["length"]] = 1
    frame_on = padded("frame_on", False)
    frame_rows, frame_cols = frame_on.nonzero(as_tuple=True)
    return Batch(
        text_ids=padded("text_ids", 0),
        text_on=attention.bool(),
        codec_ids=padded("codec_ids", 0),
        codec_on=padded("codec_on", False),
        sub_codes=padded("sub_codes", 0, (groups - 1,)),
        frame_on=frame_on,
        labels=padded("labels", IGNORE_INDEX),
        attention_mask=attention,
        speaker_pos=torch.tensor([s["speaker_pos"] for s in sequences], dtype=torch.long),
        speaker_embeddings=torch.stack([s.speaker_embedding for s in samples]),
        frame_rows=frame_rows,
        frame_cols=frame_cols,
        tokens=sum(s["length"] for s in sequences),
    )
