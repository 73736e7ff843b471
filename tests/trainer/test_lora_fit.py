"""The fit check's estimate of the LoRA recipe on the real 1.7B architecture (meta device: nothing allocated)."""

from __future__ import annotations

import torch
from voicefinetune_trainer.fit import GIB, estimate_peak
from voicefinetune_trainer.lora import LoraSettings, adapter_parameters, attach_adapters
from voicefinetune_trainer.recipe import RECIPES

from bench.train_memory import build_model, real_config

FRAMES = 375  # 30 s at 12.5 frames per second
POSITIONS = 3 + 6 + 100 + 3 + FRAMES  # role, codec prefix, 100 text tokens, trailing tokens, the frames


def test_a_lora_voice_of_the_1_7b_model_fits_a_16_gb_card_where_the_full_fine_tune_does_not():
    model = build_model(real_config(), torch.float32, "meta")
    compact = estimate_peak(
        model, RECIPES["compact"], device_type="cuda", batch_size=2, positions=POSITIONS, frames=FRAMES
    )
    attach_adapters(model.talker, LoraSettings(rank=16))
    adapters = adapter_parameters(model)
    trained = sum(p.numel() for p in adapters)
    lora = estimate_peak(
        model, RECIPES["lora"], device_type="cuda", batch_size=2, positions=POSITIONS, frames=FRAMES
    )
    assert (
        lora.gradients == trained * 4 and lora.optimizer == trained * 8
    )  # fp32 adapters, fp32 AdamW moments
    frozen = sum(p.numel() for name, p in model.named_parameters() if ".lora_" not in name)
    assert lora.parameters == frozen * 2 + trained * 4  # bf16 base, fp32 adapters
    assert lora.total <= 10 * GIB < compact.total, (lora.describe(), compact.describe())


def test_the_lora_step_runs_on_fake_tensors_with_a_frozen_bf16_base_and_fp32_adapters(tiny_models):
    from argparse import Namespace

    from qwen_tts.core.models import Qwen3TTSConfig

    from bench.train_memory import fake_peak

    config = Qwen3TTSConfig.from_pretrained(tiny_models.base)
    config._attn_implementation = "sdpa"
    peak = fake_peak(RECIPES["lora"], Namespace(batch_size=2, frames=40, text_tokens=10), config)
    model = build_model(config, torch.float32, "meta")
    attach_adapters(model.talker, LoraSettings(rank=16))
    trained = sum(p.numel() for p in adapter_parameters(model))
    frozen = sum(p.numel() for name, p in model.named_parameters() if ".lora_" not in name)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    assert peak["parameters"] == frozen * 2 + trained * 4 + buffers  # bf16 base, fp32 adapters
    assert peak["optimizer"] >= trained * 8  # fp32 AdamW moments over the adapters only
    assert peak["total"] >= peak["parameters"] + peak["optimizer"]
