"""The 12 Hz speech tokenizer's decoder at the released size, or with chosen knobs cut down, with random weights.

The released decoder (``Qwen3-TTS-Tokenizer-12Hz``'s ``decoder_config``) has 8 causal transformer layers with a
sliding window of 72 frames; the tiny checkpoints' has 1. Weights are initialised as the tiny tokenizer's are (fan-in
scaled convolutions, unit codebooks, output calibrated to a sane level), so decoded audio is neither silent nor
clipped. ``layer_scale`` sets every transformer layer's residual scale (initialised at 0.01, learnt in training).
"""

from __future__ import annotations

from typing import Any

from .tiny_init import fan_in_init, normal_
from .tiny_speech_tokenizer import _calibrate_decoder_level, _decoder_codebooks

RELEASED_DECODER = {
    "codebook_size": 2048,
    "codebook_dim": 512,
    "hidden_size": 512,
    "head_dim": 64,
    "latent_dim": 1024,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "sliding_window": 72,
    "intermediate_size": 1024,
    "num_hidden_layers": 8,
    "num_quantizers": 16,
    "upsample_rates": [8, 5, 4, 3],
    "upsampling_ratios": [2, 2],
    "decoder_dim": 1536,
    "rope_theta": 10000,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "layer_scale_initial_scale": 0.01,
}


def random_decoder(*, seed: int = 0, layer_scale: float | None = None, **overrides: Any) -> Any:
    """A ``Qwen3TTSTokenizerV2Decoder`` of the released shape (with ``overrides``), random weights, eval mode."""
    import torch
    from qwen_tts.core.tokenizer_12hz.configuration_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2DecoderConfig,
    )
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import Qwen3TTSTokenizerV2Decoder

    config = Qwen3TTSTokenizerV2DecoderConfig(**{**RELEASED_DECODER, **overrides})
    decoder = Qwen3TTSTokenizerV2Decoder(config).eval()
    generator = torch.Generator().manual_seed(seed)
    fan_in_init(decoder, generator)
    for codebook in _decoder_codebooks(decoder):
        normal_(codebook.embedding_sum, 1.0, generator)
    if layer_scale is not None:
        with torch.no_grad():
            for layer in decoder.pre_transformer.layers:
                layer.self_attn_layer_scale.scale.fill_(layer_scale)
                layer.mlp_layer_scale.scale.fill_(layer_scale)
    _calibrate_decoder_level(decoder, generator)
    return decoder
