"""The speech tokenizer decoder's attention masks, built with two comparisons instead of transformers' vmap.

On every forward, upstream's decoder transformer asks transformers' masking_utils for a causal and a sliding-window
causal mask. The decoder passes position ids (``cache_position[None]``) and no cache, so masking_utils treats the
input as possibly packed sequences: it never takes SDPA's ``is_causal`` shortcut and builds both masks element by
element with ``torch.vmap`` (the causal one is built even though every layer slides). On the tiny checkpoints that
was half a codec chunk's CPU time or more; on the released decoder its convolutions dwarf it (bench/codec_mask.py).

`install` hooks the loaded decoder's transformer so that such a call gets its masks ready-made (the forward takes a
dict of masks per layer type): the same boolean [batch, 1, frames, frames] masks, query i attending to keys j with
``i - window < j <= i`` (one sequence: the packed-sequence test finds one; no padding), so the samples are the same
bit for bit. A call with anything else (a cache, also one the config asks for; positions; a mask) goes upstream's
way: with a cache masking_utils may skip the mask for SDPA's ``is_causal``, which need not round the same.
`uninstall` restores upstream's path (tests and bench/codec_mask.py compare the two).

A mask function registered with transformers' ``AttentionMaskInterface`` would not do: it is not told whether the
input was packed, only handed the combined mask function to evaluate.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

_HANDLE = "_vft_plain_masks"  # the hook's handle, on the decoder's transformer
_UPSTREAM_KWARGS = ("attention_mask", "position_ids", "past_key_values", "cache_position")


def masks(config: Any, batch: int, frames: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Each layer type's mask for ``frames`` positions from 0 (True: attend), as masking_utils builds it for SDPA."""
    windows = {"sliding_attention": int(config.sliding_window), "full_attention": None}
    built = {}
    for layer_type in set(config.layer_types):
        if layer_type not in windows:
            raise ValueError(f"no plain mask for {layer_type!r} layers")
        built[layer_type] = _mask(
            batch, frames, windows[layer_type], device, torch.is_inference_mode_enabled()
        )
    return built


@functools.lru_cache(maxsize=32)
def _mask(batch: int, frames: int, window: int | None, device: torch.device, inference: bool) -> torch.Tensor:
    """Cached: a stream asks for the same few shapes chunk after chunk, and on shared cores even these few ops
    can wait for a busy thread. ``inference`` keys the cache because a mask made in inference mode cannot be used
    where autograd records. Laid out as masking_utils' (the batch materialised), read only by attention."""
    position = torch.arange(frames, device=device)
    mask = position[None, :] <= position[:, None]
    if window is not None:
        mask &= position[None, :] > position[:, None] - window
    return mask.expand(batch, 1, frames, frames).contiguous()


def _supply_masks(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any] | None:
    embeds = kwargs.get("inputs_embeds")
    caching = kwargs.get("use_cache")  # None: the config's, as the forward's check_model_inputs resolves it
    caching = getattr(module.config, "use_cache", None) if caching is None else caching
    if args or embeds is None or caching or any(kwargs.get(name) is not None for name in _UPSTREAM_KWARGS):
        return None
    batch, frames = embeds.shape[:2]
    return args, {**kwargs, "attention_mask": masks(module.config, batch, frames, embeds.device)}


def install(decoder: Any) -> None:
    """The decoder's transformer (``Qwen3TTSTokenizerV2Decoder.pre_transformer``) gets its masks from `masks`."""
    transformer = decoder.pre_transformer
    if transformer.config._attn_implementation != "sdpa" or getattr(transformer, _HANDLE, None) is not None:
        return  # eager and flash attention take other mask forms
    setattr(transformer, _HANDLE, transformer.register_forward_pre_hook(_supply_masks, with_kwargs=True))


def uninstall(decoder: Any) -> None:
    """Upstream's masks again."""
    handle = vars(decoder.pre_transformer).pop(_HANDLE, None)
    if handle is not None:
        handle.remove()


def installed(decoder: Any) -> bool:
    return getattr(decoder.pre_transformer, _HANDLE, None) is not None


def forget() -> None:
    """Drop the cached masks (a released model's device memory goes back)."""
    _mask.cache_clear()
