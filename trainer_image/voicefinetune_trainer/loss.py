"""The SFT loss: talker CE on codebook 0 + 0.3 × sub-talker (code predictor) CE on codebooks 1..15.

Label alignment (upstream issues #179/#371 shift twice): the talker's codebook-0 labels sit at the positions of
the tokens themselves and the model's `ForCausalLMLoss` shifts them once; the code predictor (sub-talker) gets,
for frame k, the talker hidden state of the position before frame k (the one that predicted its codebook 0, as
during generation) followed by codebooks 0..14, and its logits for codebooks 1..15 are scored against those codes
directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from voicefinetune_trainer.batching import Batch

SUB_TALKER_LOSS_WEIGHT = 0.3


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    talker: torch.Tensor
    sub_talker: torch.Tensor


def talker_inputs(model: Any, batch: Batch) -> torch.Tensor:
    """(B, L, hidden) input embeddings: projected text channel + codec channel + frame codes + speaker."""
    talker = model.talker
    text = talker.text_projection(talker.get_text_embeddings()(batch.text_ids)) * batch.text_on.unsqueeze(-1)
    embeds = text + talker.get_input_embeddings()(batch.codec_ids) * batch.codec_on.unsqueeze(-1)
    frame_on = batch.frame_on.unsqueeze(-1)
    for index, embedding in enumerate(talker.code_predictor.get_input_embeddings()):
        embeds = embeds + embedding(batch.sub_codes[..., index]) * frame_on
    speaker = torch.zeros_like(embeds)
    rows = torch.arange(embeds.shape[0], device=embeds.device)
    speaker[rows, batch.speaker_pos] = batch.speaker_embeddings.to(embeds.dtype)
    return embeds + speaker


def sft_loss(model: Any, batch: Batch) -> LossParts:
    """Talker CE on codebook 0 (shifted once, by the model's loss) + 0.3 × sub-talker CE on codebooks 1..15."""
    talker = model.talker
    outputs = talker(
        inputs_embeds=talker_inputs(model, batch),
        attention_mask=batch.attention_mask,
        labels=batch.labels,
        use_cache=False,
        output_hidden_states=True,
    )
    hidden = outputs.hidden_states[0][-1]  # final (normed) talker hidden states, (B, L, hidden)

    # Frame k at position p is predicted from the hidden state at p - 1: talker for codebook 0, and the code
    # predictor for the rest, which starts from that same hidden state during generation.
    rows, cols = batch.frame_rows, batch.frame_cols
    frame_hidden = hidden[rows, cols - 1]
    frame_codes = torch.cat([batch.codec_ids[rows, cols].unsqueeze(-1), batch.sub_codes[rows, cols]], dim=-1)
    predictor_embeddings = talker.code_predictor.get_input_embeddings()
    sub_inputs = [frame_hidden.unsqueeze(1), talker.get_input_embeddings()(frame_codes[:, :1])]
    sub_inputs += [
        predictor_embeddings[i](frame_codes[:, i + 1 : i + 2]) for i in range(frame_codes.shape[1] - 2)
    ]
    sub_logits = talker.code_predictor.forward_finetune(
        inputs_embeds=torch.cat(sub_inputs, dim=1), use_cache=False
    ).logits
    sub_loss = F.cross_entropy(
        sub_logits.float().reshape(-1, sub_logits.shape[-1]), frame_codes[:, 1:].reshape(-1)
    )
    return LossParts(
        total=outputs.loss + SUB_TALKER_LOSS_WEIGHT * sub_loss, talker=outputs.loss, sub_talker=sub_loss
    )
