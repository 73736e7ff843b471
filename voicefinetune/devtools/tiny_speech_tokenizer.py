"""The tiny 12 Hz speech tokenizer (24 kHz, ``SAMPLES_PER_FRAME`` samples per frame, ``NUM_CODE_GROUPS``
codebooks of ``CODEBOOK_SIZE`` codes) with random weights that still behave: its codebooks are seeded from frames
of `signals.synthetic_voice` clips (``encode`` gives varied codes) and its decoder is calibrated to a sane level
(``decode`` gives non-silent, unclipped audio)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .signals import synthetic_voice
from .tiny_configs import CODEBOOK_SIZE, NUM_CODE_GROUPS, speech_tokenizer_config
from .tiny_init import fan_in_init, normal_


def build_speech_tokenizer(seed: int) -> Any:
    """The tiny 12 Hz speech tokenizer model with audible, code-diverse random weights."""
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    generator = torch.Generator().manual_seed(seed)
    model = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**speech_tokenizer_config())).eval()
    fan_in_init(model.encoder.encoder, generator)
    fan_in_init(model.decoder, generator)
    _seed_encoder_codebooks(model.encoder, seed, generator)
    for codebook in _decoder_codebooks(model.decoder):
        normal_(codebook.embedding_sum, 1.0, generator)
    _calibrate_decoder_level(model.decoder, generator)
    return model


def _calibrate_decoder_level(decoder: Any, generator: Any, target_rms: float = 0.15) -> None:
    """Scale the last conv so decoded audio has about `target_rms` instead of clipping at +-1."""
    import torch

    last_conv = decoder.decoder[-1].conv
    codes = torch.randint(0, CODEBOOK_SIZE, (4, NUM_CODE_GROUPS, 12), generator=generator)
    with torch.no_grad():
        last_conv.weight.mul_(
            1e-4
        )  # the output is linear in this weight (no bias) and now far from the clamp
        rms = decoder(codes).pow(2).mean().sqrt()
        last_conv.weight.mul_(target_rms / (rms + 1e-12))


def _decoder_codebooks(decoder: Any) -> Iterator[Any]:
    for rvq in (decoder.quantizer.rvq_first, decoder.quantizer.rvq_rest):
        for layer in rvq.vq.layers:
            yield layer._codebook


def _seed_encoder_codebooks(encoder: Any, seed: int, generator: Any) -> None:
    """Set each RVQ codebook to latent frames (residuals, after the first) of synthetic clips, so that nearest-
    centroid search spreads over the codes instead of mapping everything to code 0."""
    import torch

    clips = np.stack([synthetic_voice(seed * 1000 + i) for i in range(8)])
    with torch.no_grad():
        latents = encoder.encoder(torch.from_numpy(clips).unsqueeze(1))
        latents = encoder.encoder_transformer(latents.transpose(1, 2))[0].transpose(1, 2)
        latents = encoder.downsample(latents)
        quantizer = encoder.quantizer
        for rvq in (
            quantizer.semantic_residual_vector_quantizer,
            quantizer.acoustic_residual_vector_quantizer,
        ):
            projected = rvq.input_proj(latents) if rvq.input_proj is not None else latents
            residual = projected.transpose(1, 2).reshape(-1, projected.shape[1])
            for layer in rvq.layers:
                codebook = layer.codebook
                picks = torch.randint(0, residual.shape[0], (codebook.codebook_size,), generator=generator)
                jitter = torch.randn(codebook.codebook_size, residual.shape[1], generator=generator)
                centroids = residual[picks] + 0.05 * residual.std() * jitter
                codebook.embed_sum.copy_(centroids)
                codebook.cluster_usage.fill_(1.0)
                codebook._embed = None
                residual = residual - centroids[codebook.quantize(residual)]
