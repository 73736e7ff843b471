"""LoRA voices trained on the tiny Base model (PEFT, in-process, a few seconds each), for the serving tests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch

from voicefinetune.devtools.sample_data import Clip, reference_clip, speech_clips
from voicefinetune.schemas import SAMPLE_RATE
from voicefinetune.settings import Settings

LORA_SPEAKERS = ("Narrator", "Hero", "Villain")


@dataclass(frozen=True)
class LoraVoiceFolder:
    speaker: str
    folder: Path  # a checkpoint-epoch-N folder: adapter, speaker embedding, config naming the tiny base


def _at_24k(clip: Clip) -> np.ndarray:
    if clip.sample_rate == SAMPLE_RATE:
        return clip.waveform.astype(np.float32)
    return librosa.resample(clip.waveform, orig_sr=clip.sample_rate, target_sr=SAMPLE_RATE).astype(np.float32)


def train_lora_voices(base: Path, root: Path, *, rank: int = 2) -> list[LoraVoiceFolder]:
    """One rank-``rank`` voice per name of LORA_SPEAKERS, each from its own reference speaker and clips, with a
    learning rate high enough that greedy codes differ from the base model's."""
    from voicefinetune_trainer.codes import encode_samples
    from voicefinetune_trainer.lora import LoraSettings
    from voicefinetune_trainer.sft import TrainConfig, load_base_model, train

    settings = Settings(device="cpu", use_flash_attn=False, data_dir=root / "data")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        voices = []
        for seed, speaker in enumerate(LORA_SPEAKERS):
            tts = load_base_model(base, settings, "lora")
            ref = _at_24k(reference_clip(seed=seed + 1))
            items = [(c.text, _at_24k(c), ref) for c in speech_clips(4, seed=seed + 1)]
            samples = encode_samples(tts, items)
            config = TrainConfig(
                speaker_name=speaker,
                num_epochs=2,
                batch_size=2,
                lr=2e-2,
                output_dir=root / speaker / "output",
                seed=seed,
                recipe="lora",
                lora=LoraSettings(rank),
                base_model=str(base),
            )
            final = train(base, samples, config=config, settings=settings, on_step=lambda _: None, tts=tts)
            voices.append(LoraVoiceFolder(speaker, Path(final)))
        return voices
    finally:
        torch.set_num_threads(threads)
