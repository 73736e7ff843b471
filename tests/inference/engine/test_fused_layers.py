"""The continuous loop's fused layer step (`layers.FusedLayer`, `fused_layer_forward`) against the unfused one
(`layer_forward`: upstream's modules' weights, upstream's rotary helpers and attention function), float32 on CPU:
the same numbers exactly, LoRA rows included; and a frame whose rows are all greedy chooses the same codes without
the draws (`SlotDecoder.frame(..., sampling=False)`)."""

from __future__ import annotations

import pytest
import torch
from voicefinetune_inference.engine import lora
from voicefinetune_inference.engine.kv_cache import StaticKV
from voicefinetune_inference.engine.layers import (
    FusedLayer,
    attention_function,
    fused_layer_forward,
    layer_forward,
    plain_rotation,
    rotary_tables,
    step_mask,
    talker_rotation,
)
from voicefinetune_inference.engine.slot_step import SlotDecoder

from .engine_helpers import load_tiny

BATCH = 3
CACHED = 5  # positions already in the cache before the step


@pytest.fixture
def talker(tiny_models):
    """A fresh tiny Base talker (fusing rewrites its projections' weights as views: no sharing between tests)."""
    return load_tiny(tiny_models, "base").tts.model.talker


def projections(layer) -> dict[str, torch.Tensor]:
    attention, mlp = layer.self_attn, layer.mlp
    return {
        "qkv": torch.cat([attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]),
        "gate_up": torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]),
    }


def separate_outputs(layer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    attention, mlp = layer.self_attn, layer.mlp
    return {
        "qkv": torch.cat([attention.q_proj(x), attention.k_proj(x), attention.v_proj(x)], dim=-1),
        "gate_up": torch.cat([mlp.gate_proj(x), mlp.up_proj(x)], dim=-1),
    }


def filled_cache(attention, generator: torch.Generator) -> StaticKV:
    like = torch.zeros(1)
    cache = StaticKV.for_layers(
        attention, layers=attention.layer_idx + 1, batch=BATCH, capacity=16, like=like
    )
    for buffers in (cache.keys, cache.values):
        buffers[attention.layer_idx][:, :, :CACHED] = torch.randn(
            buffers[attention.layer_idx][:, :, :CACHED].shape, generator=generator
        )
    cache.position = CACHED
    return cache


@torch.inference_mode()
def test_fused_projections_compute_what_the_separate_ones_do_with_the_same_weights(talker):
    x = torch.randn(BATCH, 2, talker.config.hidden_size, generator=torch.Generator().manual_seed(1))
    for layer in (talker.model.layers[0], talker.code_predictor.model.layers[-1]):
        want, weights = separate_outputs(layer, x), projections(layer)
        fused = FusedLayer.of(layer)
        assert torch.equal(fused.qkv(x), want["qkv"])
        assert torch.equal(fused.gate_up(x), want["gate_up"])
        # each projection's weight is now its rows of the fused one (no second copy), with the same values
        assert torch.equal(fused.qkv.weight, weights["qkv"])
        assert layer.self_attn.q_proj.weight.data_ptr() == fused.qkv.weight.data_ptr()
        assert layer.mlp.gate_proj.weight.data_ptr() == fused.gate_up.weight.data_ptr()
        assert torch.equal(separate_outputs(layer, x)["qkv"], want["qkv"])


@torch.inference_mode()
def test_a_talker_layer_step_with_a_padding_mask_equals_the_unfused_step(talker):
    generator = torch.Generator().manual_seed(2)
    layer = talker.model.layers[-1]
    attention = layer.self_attn
    hidden = torch.randn(BATCH, 1, talker.config.hidden_size, generator=generator)
    positions = torch.tensor([[CACHED + 7], [CACHED + 2], [CACHED]]).expand(3, BATCH, 1)
    cos, sin = talker.model.rotary_emb(hidden, positions)  # [3, B, 1, D]: the three axes' positions are equal
    keep = torch.ones(BATCH, CACHED + 1, dtype=torch.bool)
    keep[0, :2] = keep[2, 3] = False  # left padding in one row, a hidden position in another
    mask = step_mask(attention, keep, hidden.dtype)
    unfused_cache = filled_cache(attention, generator)
    fused_cache = StaticKV([k.clone() for k in unfused_cache.keys], [v.clone() for v in unfused_cache.values])
    fused_cache.position = CACHED
    want = layer_forward(
        layer,
        hidden,
        rotate=talker_rotation(attention, cos, sin),
        cache=unfused_cache,
        mask=mask,
        attend=attention_function(attention),
    )
    table_cos, table_sin = rotary_tables(cos, sin)
    got = fused_layer_forward(
        FusedLayer.of(layer),
        hidden,
        rotary=(table_cos[0, :, :, None], table_sin[0, :, :, None]),
        cache=fused_cache,
        mask=mask,
        attend=None,
    )
    assert torch.equal(got, want)
    index = attention.layer_idx
    assert torch.equal(fused_cache.keys[index], unfused_cache.keys[index])
    assert torch.equal(fused_cache.values[index], unfused_cache.values[index])


@torch.inference_mode()
def test_a_predictor_layer_on_two_causal_positions_equals_the_unfused_step(talker):
    predictor = talker.code_predictor.model
    layer = predictor.layers[0]
    attention = layer.self_attn
    hidden = torch.randn(BATCH, 2, predictor.config.hidden_size, generator=torch.Generator().manual_seed(3))
    cos, sin = predictor.rotary_emb(hidden, torch.arange(2).unsqueeze(0))  # [1, 2, D]
    caches = [
        StaticKV.for_layers(attention, layers=1, batch=BATCH, capacity=16, like=hidden) for _ in range(2)
    ]
    want = layer_forward(
        layer,
        hidden,
        rotate=plain_rotation(cos, sin),
        cache=caches[0],
        mask=None,
        attend=attention_function(attention),
    )
    table_cos, table_sin = rotary_tables(cos, sin)
    got = fused_layer_forward(
        FusedLayer.of(layer),
        hidden,
        rotary=(table_cos[0, :, None], table_sin[0, :, None]),
        cache=caches[1],
        mask=None,
        attend=None,
    )
    assert torch.equal(got, want)
    assert torch.equal(caches[1].keys[0], caches[0].keys[0])


@torch.inference_mode()
def test_lora_rows_add_each_projections_update_on_its_slice_of_the_fused_output(talker):
    generator = torch.Generator().manual_seed(4)
    bank = lora.AdapterBank.of(talker, capacity=2)
    layer = talker.model.layers[0]
    prefix = "model.layers.0."
    rank = 2
    modules = {}
    for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj"):
        linear = layer.get_submodule(name)
        modules[prefix + name] = (
            torch.randn(rank, linear.in_features, generator=generator),
            torch.randn(linear.out_features, rank, generator=generator),
        )
    index = bank.attach("voice:a", lora.AdapterWeights(modules, scaling=0.5))
    x = torch.randn(BATCH, 1, talker.config.hidden_size, generator=generator)
    base = separate_outputs(layer, x)
    fused = FusedLayer.of(layer)
    with bank.rows(lora.AdapterRows.of([index, -1, index], [1.0, 0.0, 0.3])):
        want = separate_outputs(layer, x)  # each MultiLoraLinear adds its rows' updates
        assert torch.equal(fused.qkv(x), want["qkv"])
        assert torch.equal(fused.gate_up(x), want["gate_up"])
    assert torch.equal(want["qkv"][1], base["qkv"][1])  # the row without an adapter is the base model's
    assert not torch.equal(want["qkv"][0], base["qkv"][0])  # the adapter's rows do change


def random_state(decoder: SlotDecoder, span: int, generator: torch.Generator) -> None:
    """Rows mid-utterance in every slot, all greedy: what `admit` and earlier frames would have left."""

    def fill(tensor: torch.Tensor) -> None:
        tensor.copy_(torch.randn(tensor.shape, generator=generator).to(tensor.dtype))

    for tensor in (
        decoder.logits,
        decoder.past_hidden,
        decoder.trailing,
        *decoder.kv.keys,
        *decoder.kv.values,
    ):
        fill(tensor)
    decoder.seen.copy_(torch.rand(decoder.seen.shape, generator=generator) < 0.2)
    decoder.suppressed.scatter_(
        1, decoder.logits.argmax(dim=1, keepdim=True), True
    )  # the restriction matters
    slots = decoder.slots
    decoder.kv.write.copy_(torch.randint(1, span - 1, (slots,), generator=generator))
    decoder.start.copy_(decoder.kv.write)
    decoder.count.copy_(torch.arange(slots))
    decoder.active.fill_(1)
    decoder.limit.fill_(100)
    decoder.min_new.fill_(2)
    decoder.eos.fill_(decoder.talker.config.codec_eos_token_id)
    decoder.penalty.fill_(1.05)


@torch.inference_mode()
def test_a_frame_of_greedy_rows_without_the_draws_makes_what_the_full_step_makes(talker):
    span = 12
    decoder = SlotDecoder(talker, slots=BATCH, capacity=16, like=torch.zeros(1))
    random_state(decoder, span, torch.Generator().manual_seed(5))
    before = {name: tensor.clone() for name, tensor in decoder.buffers().items()}
    frames = []
    for sampling in (True, False):
        for name, tensor in decoder.buffers().items():
            tensor.copy_(before[name])
        decoder.frame(BATCH, span, sampling=sampling)
        frames.append({name: tensor.clone() for name, tensor in decoder.buffers().items()})
    full, greedy = frames
    assert not decoder.samples(BATCH)
    assert not torch.equal(full["out"], before["out"])  # the step did write its codes
    for name, tensor in full.items():
        assert torch.equal(greedy[name], tensor), name
