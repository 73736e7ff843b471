"""The tiny `Qwen3TTSForConditionalGeneration` models: random, but with conditioning the tests can hear (a talker
initialised with a large std, so text, instruct, language and speaker change the sampled codes; a speaker encoder
calibrated so that different voices give different embeddings)."""

from __future__ import annotations

import copy
from typing import Any

from ..schemas import SAMPLE_RATE
from .signals import synthetic_voice
from .tiny_configs import TALKER_INIT_STD
from .tiny_init import fan_in_init, normal_


def build_tts_model(config: dict[str, Any], seed: int) -> Any:
    """A `Qwen3TTSForConditionalGeneration` from `config` with the talker at TALKER_INIT_STD."""
    import torch
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**copy.deepcopy(config))).eval()
    for layer in model.talker.modules():
        if isinstance(layer, (nn.Linear, nn.Embedding)):
            normal_(layer.weight, TALKER_INIT_STD, generator)
            bias = getattr(layer, "bias", None)  # an Embedding has none
            if bias is not None:
                with torch.no_grad():
                    bias.zero_()
    if model.speaker_encoder is not None:
        fan_in_init(model.speaker_encoder, generator)
        _calibrate_speaker_encoder(model, seed)
    return model


def _calibrate_speaker_encoder(model: Any, seed: int) -> None:
    """Centre and scale the speaker encoder's output over a set of synthetic voices: random ReLU features share a
    large common component, which would make every voice sound alike to the talker."""
    import torch

    with torch.no_grad():
        embeddings = torch.stack(
            [
                model.extract_speaker_embedding(synthetic_voice(seed * 1000 + 500 + i), SAMPLE_RATE)
                for i in range(6)
            ]
        )
        fc = model.speaker_encoder.fc
        scale = TALKER_INIT_STD / (embeddings.std(dim=0).mean() + 1e-6)
        fc.weight.mul_(scale)
        fc.bias.copy_((fc.bias - embeddings.mean(dim=0)) * scale)


def speaker_embedding(model: Any, seed: int) -> Any:
    return model.extract_speaker_embedding(synthetic_voice(seed, seconds=2.0), SAMPLE_RATE)
