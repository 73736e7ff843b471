"""One frame for every row of a continuously batched decode loop: the step the scheduler runs between admissions.

`SlotDecoder` holds, per slot, everything a row needs from one frame to the next as fixed device buffers (the next
choice's logits, the talker's last hidden state, repetition history, chosen-id count, bounds, sampling settings,
seed, trailing text, rotary start and cache length) and the slot caches (`slots.SlotKV` for the talker,
`slots.FrameKV` for the code predictor). `admit` writes a prefilled row into a slot (host side, between frames);
`frame(bucket, span)` runs one frame over slots ``[0, bucket)`` — choose codebook 0, the predictor's 15 steps, one
talker step — on slices of those buffers only, with positions and write indices on the device and the rotary
table read once per step: no host synchronisation and no allocation that depends on the data, so on CUDA each
bucket's step can be captured as a graph. Its result (per row: ended?, then the frame's 16 codes) lands in
``out``, which the scheduler reads once per frame, outside the step.

A slot that is free runs along inside its bucket on stale values; ``active`` keeps its lengths where they are, and
its results are ignored.
"""

from __future__ import annotations

from typing import Any

import torch

from voicefinetune_inference.engine.layers import (
    FusedLayer,
    fused_attention,
    fused_layer_forward,
    normed,
    rotary_tables,
    step_mask,
)
from voicefinetune_inference.engine.row_sampling import (
    RowSettings,
    choose_rows,
    column_keys,
    draw_keys,
    restrict_rows,
    seed_keys,
)
from voicefinetune_inference.engine.sampling import SamplingParams
from voicefinetune_inference.engine.slots import FrameKV, SlotKV

SEED_MASK = 2**63 - 1  # seeds are kept as int64
DRAWS_PER_FRAME = 16  # a row's draw counter advances by one per code: codebook 0, then the predictor's 15


class SlotDecoder:
    def __init__(self, talker: Any, *, slots: int, capacity: int, like: torch.Tensor):
        self.talker = talker
        self.slots = slots
        self.groups = talker.config.num_code_groups
        device, hidden = like.device, talker.config.hidden_size
        vocab = talker.config.vocab_size
        layers = talker.model.layers
        self.kv = SlotKV.for_layers(
            layers[0].self_attn, layers=len(layers), slots=slots, capacity=capacity, like=like
        )
        predictor = talker.code_predictor.model.layers
        self.frame_kv = FrameKV(
            predictor[0].self_attn, layers=len(predictor), slots=slots, positions=self.groups, like=like
        )
        self.layers = [FusedLayer.of(layer) for layer in layers]
        self.predictor_layers = [FusedLayer.of(layer) for layer in predictor]
        self.attend = fused_attention(layers[0].self_attn)
        self.predictor_attend = fused_attention(predictor[0].self_attn)
        positions = torch.arange(self.groups, device=device).unsqueeze(0)
        cos, sin = rotary_tables(*talker.code_predictor.model.rotary_emb(like, positions))
        self.predictor_cos, self.predictor_sin = cos[0, :, None], sin[0, :, None]  # [positions, 1, D]
        self._rotary_table(like, capacity)

        def zeros(*shape: int, dtype: torch.dtype = torch.long) -> torch.Tensor:
            return torch.zeros(*shape, dtype=dtype, device=device)

        self.logits = zeros(slots, vocab, dtype=torch.float32)
        self.past_hidden = zeros(slots, 1, hidden, dtype=like.dtype)
        self.seen = zeros(slots, vocab, dtype=torch.bool)
        self.suppressed = zeros(slots, vocab, dtype=torch.bool)
        self.count = zeros(slots)  # codebook-0 ids chosen so far
        self.limit = zeros(slots)  # the most codebook-0 ids the row may choose
        self.min_new = zeros(slots)
        self.eos = zeros(slots)
        self.penalty = torch.ones(slots, device=device)
        self.seed_keys = zeros(slots)  # per row: its seed hashed (`row_sampling.seed_keys`)
        self.talker_columns = column_keys(vocab, device)
        self.predictor_columns = column_keys(talker.code_predictor.config.vocab_size, device)
        self.predictor_steps = torch.arange(
            1, self.groups, device=device
        )  # a predictor step's draw counter offset
        self.start = zeros(slots)  # rotary position of the row's first decode step
        self.active = zeros(slots)  # 1 while a row holds the slot
        self.talker_settings = RowSettings.empty(slots, device)
        self.predictor_settings = RowSettings.empty(slots, device)
        self.trailing = zeros(slots, capacity, hidden, dtype=like.dtype)
        self.out = zeros(slots, 1 + self.groups)  # per row: ended (0/1), then the frame's codes
        self.rows = torch.arange(slots, device=device)
        self._sampled = [False] * slots  # host side, per slot: does its row sample (talker or predictor)?

    def _rotary_table(self, like: torch.Tensor, capacity: int) -> None:
        """cos and signed sin per position [capacity + 1, D]. The talker's rotary is multimodal (sections of the
        head rotate by three position axes), but a decode step's three positions are equal, so every section reads
        the same table: the merged table is the first axis's."""
        table = torch.arange(capacity + 1, device=like.device).view(1, 1, -1).expand(3, 1, -1)
        cos, sin = rotary_tables(*self.talker.model.rotary_emb(like, table))  # [3, 1, capacity + 1, D]
        self.cos, self.sin = cos[0, 0], sin[0, 0]

    @property
    def capacity(self) -> int:
        return self.kv.capacity

    def grow(self, capacity: int) -> None:
        """Room for ``capacity`` positions per slot (cache, trailing text, rotary table): rare, between frames."""
        if capacity <= self.capacity:
            return
        old = self.trailing
        self.trailing = old.new_zeros((old.shape[0], capacity, old.shape[2]))
        self.trailing[:, : old.shape[1]] = old
        self._rotary_table(self.past_hidden, capacity)
        self.kv.grow(capacity)

    def buffers(self) -> dict[str, torch.Tensor]:
        """The tensors a step reads and writes (for checks that they keep their storage)."""
        named = {
            name: value
            for name, value in vars(self).items()
            if isinstance(value, torch.Tensor) and name != "rows"
        }
        for index, (key, value) in enumerate(zip(self.kv.keys, self.kv.values, strict=True)):
            named[f"kv.keys.{index}"], named[f"kv.values.{index}"] = key, value
        for index, (key, value) in enumerate(zip(self.frame_kv.keys, self.frame_kv.values, strict=True)):
            named[f"frame_kv.keys.{index}"], named[f"frame_kv.values.{index}"] = key, value
        named["kv.write"] = self.kv.write
        return named

    # --- between frames (host side) ------------------------------------------------------------------------------

    def admit(
        self,
        slot: int,
        *,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        logits: torch.Tensor,
        past_hidden: torch.Tensor,
        start: int,
        trailing: torch.Tensor,
        pad: torch.Tensor,
        limit: int,
        min_new: int,
        eos: int,
        penalty: float,
        suppressed: torch.Tensor | None,
        talker: SamplingParams,
        predictor: SamplingParams,
        seed: int,
    ) -> None:
        """A prefilled row into ``slot``: its keys and values per layer [heads, n, D], its first logits [V], last
        hidden state [1, H], rotary start, trailing text [T, H] (then ``pad`` [H]) and settings."""
        for layer, (key, value) in enumerate(zip(keys, values, strict=True)):
            self.kv.load(slot, layer, key, value)
        self.kv.write[slot] = keys[0].shape[1]
        self.logits[slot] = logits
        self.past_hidden[slot] = past_hidden
        self.seen[slot] = False
        self.suppressed[slot] = False if suppressed is None else suppressed
        self.count[slot] = 0
        self.limit[slot] = limit
        self.min_new[slot] = min_new
        self.eos[slot] = eos
        self.penalty[slot] = penalty
        self.seed_keys[slot] = seed_keys(torch.tensor([seed & SEED_MASK], device=self.seed_keys.device))[0]
        self.start[slot] = start
        self.active[slot] = 1
        self._sampled[slot] = talker.do_sample or predictor.do_sample
        length = trailing.shape[0]
        self.trailing[slot, :length] = trailing
        self.trailing[slot, length:] = pad
        for settings, params in ((self.talker_settings, talker), (self.predictor_settings, predictor)):
            settings.set(
                slot,
                do_sample=params.do_sample,
                top_k=params.top_k,
                top_p=params.top_p,
                temperature=params.temperature,
            )

    def free(self, slot: int) -> None:
        self.active[slot] = 0
        self._sampled[slot] = False

    # --- the step ---------------------------------------------------------------------------------------------

    def samples(self, bucket: int) -> bool:
        """(host side) Whether a row in slots ``[0, bucket)`` samples: otherwise a frame may skip the draws."""
        return any(self._sampled[:bucket])

    def frame(self, bucket: int, span: int, *, sampling: bool = True) -> None:
        """One frame for slots ``[0, bucket)``, attending over ``span`` cached positions; results in ``out``.
        ``sampling=False`` leaves out the draws, for a bucket whose rows are all greedy (`samples`)."""
        count, active = self.count[:bucket], self.active[:bucket]
        restricted = restrict_rows(
            self.logits[:bucket],
            seen=self.seen[:bucket],
            penalty=self.penalty[:bucket],
            suppressed=self.suppressed[:bucket],
            eos=self.eos[:bucket],
            block_eos=count < self.min_new[:bucket],
        )
        keys, draws = self.seed_keys[:bucket], count * DRAWS_PER_FRAME
        first = (
            choose_rows(
                restricted, self.talker_settings.rows(bucket), draw_keys(keys, draws), self.talker_columns
            )
            if sampling
            else restricted.argmax(dim=-1)
        )
        count += active
        self.seen[:bucket].scatter_(1, first[:, None], True)
        ended = (first == self.eos[:bucket]) | (self.limit[:bucket] <= count)
        codes, summed = self._predict(bucket, first, keys, draws if sampling else None)
        frame = (count - 1).clamp(min=0)
        text = self.trailing[self.rows[:bucket], frame.clamp(max=self.trailing.shape[1] - 1)].unsqueeze(1)
        logits, hidden = self._talker_step(bucket, span, summed + text, frame)
        self.logits[:bucket] = logits
        self.past_hidden[:bucket] = hidden
        self.kv.write[:bucket] += active
        self.out[:bucket, 0] = ended
        self.out[:bucket, 1:] = codes

    def _predictor_forward(self, embeds: torch.Tensor, start: int) -> torch.Tensor:
        cp = self.talker.code_predictor
        hidden = cp.small_to_mtp_projection(embeds)
        end = start + hidden.shape[1]
        rotary = (self.predictor_cos[start:end], self.predictor_sin[start:end])
        self.frame_kv.position = start
        for fused in self.predictor_layers:
            hidden = fused_layer_forward(
                fused, hidden, rotary=rotary, cache=self.frame_kv, mask=None, attend=self.predictor_attend
            )
        norm = cp.model.norm
        return normed(hidden[:, -1], norm.weight, norm.variance_epsilon)

    def _predict(
        self, bucket: int, first: torch.Tensor, keys: torch.Tensor, draws: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The code predictor's 15 steps: the frame's codes [b, 16] and its summed code embedding [b, 1, H].
        ``draws`` None: every row is greedy (the argmax of the logits in their own dtype picks what float32's does)."""
        cp = self.talker.code_predictor
        settings = self.predictor_settings.rows(bucket)
        self.frame_kv.bucket = bucket
        first_embed = self.talker.get_input_embeddings()(first.unsqueeze(1))
        embeds = [first_embed]
        codes = [first]
        hidden = self._predictor_forward(torch.cat((self.past_hidden[:bucket], first_embed), dim=1), 0)
        if draws is not None:  # every step's draw at once: counters draws + 1 ... draws + 15
            step_draws = draw_keys(keys[:, None], draws[:, None] + self.predictor_steps)
        for step in range(self.groups - 1):
            logits = cp.lm_head[step](hidden)
            if draws is None:
                code = logits.argmax(dim=-1)
            else:
                code = choose_rows(logits.float(), settings, step_draws[:, step], self.predictor_columns)
            codes.append(code)
            embeds.append(cp.model.codec_embedding[step](code.unsqueeze(1)))
            if step + 1 < self.groups - 1:
                hidden = self._predictor_forward(embeds[-1], step + 2)
        return torch.stack(codes, dim=1), torch.cat(embeds, dim=1).sum(1, keepdim=True)

    def _talker_step(
        self, bucket: int, span: int, embeds: torch.Tensor, frame: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits [b, V] (float32) and the last hidden state [b, 1, H] after one input per row."""
        positions = (self.start[:bucket] + frame).clamp(0, self.cos.shape[0] - 1)
        rotary = (self.cos[positions][:, None, None], self.sin[positions][:, None, None])  # [b, 1, 1, D]
        self.kv.bucket, self.kv.span = bucket, span
        mask = step_mask(self.talker.model.layers[0].self_attn, self.kv.keep(), embeds.dtype)
        hidden = embeds
        for fused in self.layers:
            hidden = fused_layer_forward(
                fused, hidden, rotary=rotary, cache=self.kv, mask=mask, attend=self.attend
            )
        norm = self.talker.model.norm
        hidden = normed(hidden, norm.weight, norm.variance_epsilon)
        return self.talker.codec_head(hidden[:, -1]).float(), hidden
