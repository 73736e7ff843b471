"""The talker's decode loop, run by us instead of Hugging Face `generate()`.

Input is what upstream's `generate_*` hands to `talker.generate` (prompt embeddings, left-padding mask, trailing
text embeddings, pad embedding, sampling settings). Per 80 ms frame: choose codebook 0 from the talker's logits,
run the code predictor's 15 steps as a plain loop over its layers (one static cache reused every frame), sum the 16
code embeddings plus the next text embedding into the talker's next input, and run one talker step over its layers
on a static cache. The prefill is upstream's own talker forward, so prompt positions and masks are upstream's.

Rows stop at their own EOS or frame bound and leave the batch (their cache rows are dropped), so a finished row
costs nothing more; ``on_row_done`` hears of each row that leaves while others keep running, with its codes, so
its audio can be made at once. Codes equal upstream's under greedy decoding (tests/inference/test_fast_engine.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from voicefinetune_inference.engine import lora
from voicefinetune_inference.engine.kv_cache import StaticKV
from voicefinetune_inference.engine.layers import (
    attention_function,
    layer_forward,
    plain_rotation,
    rms_norm,
    step_mask,
    talker_rotation,
)
from voicefinetune_inference.engine.sampling import SamplingParams, choose, restrict, suppression_mask

# on_frame(step, rows, codes): ``rows`` [b] are the batch indices still running, ``codes`` [b, 16] their frame
FrameCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
# on_row_done(row, codes): batch row ``row`` ended (EOS or frame bound) before the batch did; ``codes`` [frames, 16]
RowCallback = Callable[[int, torch.Tensor], None]


class GenerationCancelled(Exception):
    """The consumer went away; the loop stopped between two frames."""


@dataclass
class DecodeJob:
    inputs_embeds: torch.Tensor  # [B, L, H], left-padded
    attention_mask: torch.Tensor  # [B, L]
    trailing_text_hidden: torch.Tensor  # [B, T, H]
    tts_pad_embed: torch.Tensor  # [1, 1, H]
    talker: SamplingParams
    predictor: SamplingParams
    eos_id: int
    frame_limits: list[int]  # per row: the most codebook-0 ids to choose (upstream's max_new_tokens)
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0
    suppress_ids: list[int] = field(default_factory=list)
    generator: torch.Generator | None = None


class _Predictor:
    """The code predictor's 15 steps for a batch of frames, on one static cache and precomputed rotations."""

    def __init__(self, talker, batch: int, like: torch.Tensor):
        self.talker = talker
        self.cp = talker.code_predictor
        self.groups = talker.config.num_code_groups
        layers = self.cp.model.layers
        self.cache = StaticKV.for_layers(
            layers[0].self_attn, layers=len(layers), batch=batch, capacity=self.groups, like=like
        )
        positions = torch.arange(self.groups, device=like.device).unsqueeze(0)
        self.cos, self.sin = self.cp.model.rotary_emb(like, positions)
        self.attend = attention_function(layers[0].self_attn)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.keep(rows)

    def _forward(self, embeds: torch.Tensor, start: int) -> torch.Tensor:
        hidden = self.cp.small_to_mtp_projection(embeds)
        end = start + hidden.shape[1]
        rotate = plain_rotation(self.cos[:, start:end], self.sin[:, start:end])
        self.cache.position = start
        for layer in self.cp.model.layers:
            hidden = layer_forward(
                layer, hidden, rotate=rotate, cache=self.cache, mask=None, attend=self.attend
            )
        return rms_norm(self.cp.model.norm, hidden[:, -1])

    def run(
        self,
        past_hidden: torch.Tensor,
        first: torch.Tensor,
        params: SamplingParams,
        generator: torch.Generator | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [b, 16] of one frame whose codebook-0 ids are ``first``; and the frame's summed code embedding."""
        batch = first.shape[0]
        embeds = torch.empty(
            batch, self.groups, past_hidden.shape[-1], dtype=past_hidden.dtype, device=past_hidden.device
        )
        codes = torch.empty(batch, self.groups, dtype=torch.long, device=first.device)
        codes[:, 0] = first
        embeds[:, 0:1] = self.talker.get_input_embeddings()(first.unsqueeze(1))
        hidden = self._forward(torch.cat((past_hidden, embeds[:, 0:1]), dim=1), 0)
        for step in range(self.groups - 1):
            logits = self.cp.lm_head[step](hidden).float()
            codes[:, step + 1] = choose(logits, params, generator)
            embeds[:, step + 1 : step + 2] = self.cp.model.codec_embedding[step](
                codes[:, step + 1 : step + 2]
            )
            if step + 1 < self.groups - 1:
                hidden = self._forward(embeds[:, step + 1 : step + 2], step + 2)
        return codes, embeds.sum(1, keepdim=True)


class _Talker:
    """Single-step talker forwards over its layers on a static cache, from upstream's prefill."""

    def __init__(self, talker, job: DecodeJob, prefill, capacity: int):
        self.talker = talker
        embeds = job.inputs_embeds
        layers = talker.model.layers
        self.cache = StaticKV.for_layers(
            layers[0].self_attn, layers=len(layers), batch=embeds.shape[0], capacity=capacity, like=embeds
        )
        self.cache.fill_from(prefill.past_key_values)
        self.prompt_length = embeds.shape[1]
        self.padded = bool((job.attention_mask == 0).any())
        ones = torch.ones(
            embeds.shape[0], capacity - self.prompt_length, dtype=torch.bool, device=embeds.device
        )
        self.mask = torch.cat((job.attention_mask.bool(), ones), dim=1)
        self.deltas = talker.rope_deltas.view(
            -1
        ).long()  # prompt padding shifts each row's positions (upstream's rope)
        table = torch.arange(capacity + 1, device=embeds.device).view(1, 1, -1).expand(3, 1, -1)
        self.cos, self.sin = talker.model.rotary_emb(embeds, table)  # [3, 1, capacity + 1, D]
        self.attend = attention_function(layers[0].self_attn)

    def keep(self, rows: torch.Tensor) -> None:
        self.cache.keep(rows)
        self.mask = self.mask.index_select(0, rows)
        self.deltas = self.deltas.index_select(0, rows)

    def step(self, embeds: torch.Tensor, frame: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [b, V] (float32) and the last hidden state [b, 1, H] after one input per row."""
        position = self.prompt_length + frame
        rows_positions = position + self.deltas  # [b]
        layers = self.talker.model.layers
        rotate = talker_rotation(
            layers[0].self_attn,
            self.cos[:, 0, rows_positions].unsqueeze(2),
            self.sin[:, 0, rows_positions].unsqueeze(2),
        )
        mask = (
            step_mask(layers[0].self_attn, self.mask[:, : position + 1], embeds.dtype)
            if self.padded
            else None
        )
        self.cache.position = position
        hidden = embeds
        for layer in layers:
            hidden = layer_forward(
                layer, hidden, rotate=rotate, cache=self.cache, mask=mask, attend=self.attend
            )
        hidden = rms_norm(self.talker.model.norm, hidden)
        return self.talker.codec_head(hidden[:, -1]).float(), hidden


@torch.inference_mode()
def run(
    talker,
    job: DecodeJob,
    *,
    on_frame: FrameCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_row_done: RowCallback | None = None,
) -> list[torch.Tensor]:
    """Each row's codes [frames, 16] up to (not including) its EOS frame."""
    embeds, mask = job.inputs_embeds, job.attention_mask
    batch, length, _ = embeds.shape
    device = embeds.device
    prefill = talker(
        inputs_embeds=embeds,
        attention_mask=mask,
        use_cache=True,
        cache_position=torch.arange(length, device=device),
        trailing_text_hidden=job.trailing_text_hidden,
        tts_pad_embed=job.tts_pad_embed,
    )
    most = max(job.frame_limits)
    loop = _Talker(talker, job, prefill, capacity=length + most + 1)
    predictor = _Predictor(talker, batch, embeds)
    suppressed = suppression_mask(talker.config.vocab_size, job.suppress_ids, device)
    limits = torch.tensor(job.frame_limits, device=device)
    trailing = job.trailing_text_hidden
    logits, past_hidden = prefill.logits[:, -1].float(), prefill.past_hidden
    rows = torch.arange(batch, device=device)
    history = torch.empty(batch, 0, dtype=torch.long, device=device)
    out = torch.full(
        (batch, max(most, 1), talker.config.num_code_groups), job.eos_id, dtype=torch.long, device=device
    )
    lengths = [0] * batch
    chosen = 0
    while True:
        if should_stop is not None and should_stop():
            raise GenerationCancelled("generation stopped: its consumer went away")
        restricted = restrict(
            logits,
            history=history,
            repetition_penalty=job.repetition_penalty,
            suppressed=suppressed,
            eos_id=job.eos_id,
            block_eos=chosen < job.min_new_tokens,
        )
        first = choose(restricted, job.talker, job.generator)
        chosen += 1
        history = torch.cat((history, first.unsqueeze(1)), dim=1)
        done = (first == job.eos_id) | (limits <= chosen)
        if bool(done.any()):
            keep = torch.nonzero(~done).view(-1)
            if keep.numel() == 0:
                break
            if on_row_done is not None:
                for row in rows[done].tolist():
                    on_row_done(row, out[row, : lengths[row]])
            rows, first, history, limits = rows[keep], first[keep], history[keep], limits[keep]
            past_hidden, trailing = past_hidden[keep], trailing[keep]
            loop.keep(keep)
            predictor.keep(keep)
            lora.rows_kept(talker, keep)  # LoRA voices: the rows left keep their adapters
        frame = chosen - 1
        codes, summed = predictor.run(past_hidden, first, job.predictor, job.generator)
        out[rows, frame] = codes
        for row in rows.tolist():
            lengths[row] = frame + 1
        if on_frame is not None:
            on_frame(frame, rows, codes)
        text = trailing[:, frame].unsqueeze(1) if frame < trailing.shape[1] else job.tts_pad_embed
        logits, past_hidden = loop.step(summed + text, frame)
    return [out[row, : lengths[row]] for row in range(batch)]
