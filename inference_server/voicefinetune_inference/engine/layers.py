"""One decoder layer's single-step forward, written as plain tensor calls on the layer's own weights.

Upstream's layers go through several `nn.Module` calls per step (norms, projections, attention, MLP); at one token
per step that Python overhead is most of the time on small models. This computes the same thing with the same
operations in the same order (the RMS norm's float32 round trip, the attention function upstream's config picks,
upstream's own rotary helpers), so the results are identical; the parity tests compare codes exactly.
"""

from __future__ import annotations

from collections.abc import Callable
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
