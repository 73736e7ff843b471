"""One decoder layer's single-step forward, written as plain tensor calls on the layer's own weights.

Upstream's layers go through several `nn.Module` calls per step (norms, projections, attention, MLP); at one token
per step that Python overhead is most of the time on small models. This computes the same thing with the same
operations in the same order (the RMS norm's float32 round trip, the attention function upstream's config picks,
upstream's own rotary helpers), so the results are identical; the parity tests compare codes exactly.

`FusedLayer` and `fused_layer_forward` are the same layer with fewer operations, for the continuous loop's step
(`slot_step`): q/k/v in one matmul and gate/up in one (`FusedLinear`), q_norm and k_norm in one normalisation, one
rotation of queries and keys together from a table the step reads once, and SDPA called directly. Each operation
still computes exactly what upstream's does in float32 (pinned by tests/inference/engine/test_fused_layers.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the usual name

from voicefinetune_inference.engine.lora import MultiLoraLinear

Rotate = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def rms_norm(norm: Any, hidden: torch.Tensor) -> torch.Tensor:
    """Qwen3's RMS norm: computed in float32, scaled by the weight after casting back."""
    dtype = hidden.dtype
    h = hidden.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * h.to(dtype)


def _linear(module: Any, x: torch.Tensor) -> torch.Tensor:
    if isinstance(module, MultiLoraLinear):  # a LoRA voice's rows add their adapters' updates
        return module(x)
    return F.linear(x, module.weight, module.bias)


def attention_function(attention: Any) -> Callable[..., tuple[torch.Tensor, Any]]:
    """The attention kernel upstream's layer would use (eager, SDPA or flash attention, per the loaded config)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    implementation = attention.config._attn_implementation
    if implementation == "eager":
        from qwen_tts.core.models.modeling_qwen3_tts import eager_attention_forward

        return eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[implementation]


def step_mask(attention: Any, keep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A padding mask ``keep`` [B, keys] (True: attend) in the form the configured attention kernel takes, for a
    step whose queries are the last positions (so causality adds nothing).

    The form is the one transformers' own mask factory for that implementation builds (`ALL_MASK_ATTENTION_FUNCTIONS`):
    flash attention unpads with the 2D mask itself (a 4D mask gives it sequence lengths of the wrong shape), eager
    attention adds the mask to its scores, SDPA takes a broadcastable boolean mask.
    """
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, flash_attention_mask

    factory = ALL_MASK_ATTENTION_FUNCTIONS.get(attention.config._attn_implementation)
    if factory is flash_attention_mask:
        return keep
    mask = keep[:, None, None, :]
    if factory is eager_mask:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(dtype).min
        )
    return mask


def talker_rotation(attention: Any, cos: torch.Tensor, sin: torch.Tensor) -> Rotate:
    from qwen_tts.core.models.modeling_qwen3_tts import apply_multimodal_rotary_pos_emb

    section, interleaved = attention.rope_scaling["mrope_section"], attention.rope_scaling["interleaved"]
    return lambda q, k: apply_multimodal_rotary_pos_emb(q, k, cos, sin, section, interleaved)


def plain_rotation(cos: torch.Tensor, sin: torch.Tensor) -> Rotate:
    from qwen_tts.core.models.modeling_qwen3_tts import apply_rotary_pos_emb

    return lambda q, k: apply_rotary_pos_emb(q, k, cos, sin)


def layer_forward(
    layer: Any,
    hidden: torch.Tensor,
    *,
    rotate: Rotate,
    cache: Any,
    mask: torch.Tensor | None,
    attend: Callable[..., tuple[torch.Tensor, Any]],
) -> torch.Tensor:
    """``layer`` (a Qwen3-TTS decoder layer) on ``hidden`` [B, q, H], writing its keys and values into ``cache``."""
    attention = layer.self_attn
    x = rms_norm(layer.input_layernorm, hidden)
    heads_shape = (*x.shape[:-1], -1, attention.head_dim)
    query = rms_norm(attention.q_norm, _linear(attention.q_proj, x).view(heads_shape)).transpose(1, 2)
    key = rms_norm(attention.k_norm, _linear(attention.k_proj, x).view(heads_shape)).transpose(1, 2)
    value = _linear(attention.v_proj, x).view(heads_shape).transpose(1, 2)
    query, key = rotate(query, key)
    key, value = cache.update(key, value, attention.layer_idx)
    out, _ = attend(attention, query, key, value, mask, dropout=0.0, scaling=attention.scaling)
    out = out.reshape(*x.shape[:-1], -1).contiguous()
    hidden = hidden + _linear(attention.o_proj, out)
    mlp = layer.mlp
    x = rms_norm(layer.post_attention_layernorm, hidden)
    return hidden + _linear(mlp.down_proj, mlp.act_fn(_linear(mlp.gate_proj, x)) * _linear(mlp.up_proj, x))


# --- the fused layer (the continuous loop's step) -------------------------------------------------------------------

ROTARY_HALF = 2  # rotate_half swaps the two halves of each head


def normed(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen3's RMS norm in the fewest operations that compute exactly what it does: one ``rms_norm`` with the weight
    in float32; in lower precision upstream rounds before it scales, so the weight multiplies after."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return F.rms_norm(x, (x.shape[-1],), None, eps) * weight


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, signed sin) for `rotated`: ``rotate_half(x) * sin`` equals ``x.roll(D / 2) * signed_sin`` exactly
    (negating a factor before or after a product rounds the same)."""
    first, second = sin.chunk(ROTARY_HALF, dim=-1)
    return cos, torch.cat((-first, second), dim=-1)


def rotated(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Upstream's ``x * cos + rotate_half(x) * sin``, with the same roundings."""
    return x * cos + x.roll(x.shape[-1] // ROTARY_HALF, dims=-1) * signed_sin


def _base(module: Any) -> torch.nn.Linear:
    return module.base if isinstance(module, MultiLoraLinear) else module


class FusedLinear:
    """Projections of one input (``names`` on ``owner``) as one matmul. ``weight`` holds their rows in order and each
    projection's own weight becomes a view of its rows, so the model holds no second copy and upstream's modules
    compute with the very same numbers. Rows with a LoRA adapter add each projection's update on its slice."""

    def __init__(self, owner: Any, names: Sequence[str]):
        self.owner, self.names = owner, tuple(names)
        bases = [_base(getattr(owner, name)) for name in self.names]
        if len({base.bias is None for base in bases}) != 1:
            raise ValueError(f"{self.names}: some have a bias and some not")
        # plain tensors even when the model is loaded inside inference mode: upstream's modules go on using them
        with torch.inference_mode(False), torch.no_grad():
            self.weight = torch.cat([base.weight for base in bases])
            self.bias = None if bases[0].bias is None else torch.cat([base.bias for base in bases])
            start = 0
            for base in bases:
                end = start + base.weight.shape[0]
                base.weight.data = self.weight[start:end]
                if self.bias is not None:
                    base.bias.data = self.bias[start:end]
                start = end

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        deltas = [
            module.delta(x)
            for name in self.names
            if isinstance(module := getattr(self.owner, name), MultiLoraLinear)
        ]
        if not deltas or any(delta is None for delta in deltas):  # the bank wraps all of them or none
            return y
        return y + torch.cat(deltas, dim=-1).reshape(y.shape).to(y.dtype)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FusedLayer:
    """A Qwen3-TTS decoder layer's weights as the fused step uses them (built once, when a decode loop starts)."""

    layer: Any
    qkv: FusedLinear
    gate_up: FusedLinear
    qk_weight: torch.Tensor  # [query heads + key heads, D]: q_norm's weight per query head, then k_norm's
    heads: int
    kv_heads: int

    @classmethod
    def of(cls, layer: Any) -> FusedLayer:
        attention = layer.self_attn
        if attention.q_norm.variance_epsilon != attention.k_norm.variance_epsilon:
            raise ValueError("q_norm and k_norm differ in epsilon: they cannot share one normalisation")
        heads = attention.config.num_attention_heads
        kv_heads = attention.config.num_key_value_heads
        qk_weight = torch.cat(
            (
                attention.q_norm.weight.detach().expand(heads, -1),
                attention.k_norm.weight.detach().expand(kv_heads, -1),
            )
        )
        return cls(
            layer=layer,
            qkv=FusedLinear(attention, ("q_proj", "k_proj", "v_proj")),
            gate_up=FusedLinear(layer.mlp, ("gate_proj", "up_proj")),
            qk_weight=qk_weight,
            heads=heads,
            kv_heads=kv_heads,
        )


def fused_attention(attention: Any) -> Callable[..., tuple[torch.Tensor, Any]] | None:
    """What `fused_layer_forward` attends with: None (SDPA, called directly) or upstream's other kernel."""
    return None if attention.config._attn_implementation == "sdpa" else attention_function(attention)


def sdpa_attend(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """[B, heads, q, D] -> [B, q, heads, D]: what transformers' SDPA function computes, in one call with grouped
    keys where the kernel takes them (CUDA's kernels take grouped keys only without a mask, so there they repeat)."""
    groups = query.shape[1] // key.shape[1]
    grouped = mask is None or query.device.type != "cuda"
    if not grouped and groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        scale=scaling,
        is_causal=mask is None and query.shape[2] > 1,
        enable_gqa=grouped and groups > 1,
    )
    return out.transpose(1, 2)


def fused_layer_forward(
    fused: FusedLayer,
    hidden: torch.Tensor,
    *,
    rotary: tuple[torch.Tensor, torch.Tensor],
    cache: Any,
    mask: torch.Tensor | None,
    attend: Callable[..., tuple[torch.Tensor, Any]] | None,
) -> torch.Tensor:
    """`layer_forward` with fused projections: ``rotary`` is (cos, signed sin) broadcastable to [B, q, heads, D]
    (`rotary_tables`); ``attend`` None calls SDPA directly (`sdpa_attend`), else upstream's attention function."""
    layer = fused.layer
    attention = layer.self_attn
    eps = attention.q_norm.variance_epsilon
    x = normed(hidden, layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon)
    qkv = fused.qkv(x).view(*x.shape[:-1], -1, attention.head_dim)  # [B, q, heads + 2 kv heads, D]
    split = fused.heads + fused.kv_heads
    qk = F.rms_norm(qkv[:, :, :split], (attention.head_dim,), None, eps) * fused.qk_weight
    qk = rotated(qk, *rotary)
    query = qk[:, :, : fused.heads].transpose(1, 2)
    key, value = cache.update(
        qk[:, :, fused.heads :].transpose(1, 2), qkv[:, :, split:].transpose(1, 2), attention.layer_idx
    )
    if attend is None:
        out = sdpa_attend(query, key, value, mask, attention.scaling)
    else:
        out, _ = attend(attention, query, key, value, mask, dropout=0.0, scaling=attention.scaling)
    hidden = hidden + _linear(attention.o_proj, out.reshape(*x.shape[:-1], -1))
    mlp = layer.mlp
    x = normed(hidden, layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon)
    gate, up = fused.gate_up(x).chunk(2, dim=-1)
    return hidden + _linear(mlp.down_proj, mlp.act_fn(gate) * up)
