"""LoRA training (``method: lora``): PEFT adapters on the talker's projections, their checkpoints and their resume.

The adapters are injected into the loaded talker in place (``get_peft_model``), so the SFT loss and step run
unchanged; only the adapters train (fp32 even over half-precision base weights). A checkpoint is a LoRA voice folder
(`voicefinetune.lora_voice`): PEFT's adapter files, the speaker embedding and a config naming the base checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voicefinetune.checkpoints import checkpoint_dir
from voicefinetune.lora_voice import (
    ADAPTER_WEIGHTS_FILE,
    SPEAKER_EMBEDDING_FILE,
    SPEAKER_EMBEDDING_KEY,
    LoraVoiceConfig,
    default_alpha,
    target_pattern,
)
from voicefinetune.schemas import LORA_TARGETS
from voicefinetune_trainer.checkpoint import (
    TEMP_PREFIX,
    ResumeCheckpointError,
    TrainingState,
    _replace_dir,
)
from voicefinetune_trainer.fit import ADAPTER_MARK


@dataclass(frozen=True)
class LoraSettings:
    rank: int = 16
    alpha: int | None = None  # None: 2 × rank
    targets: tuple[str, ...] | None = None  # None: every projection

    def config(self, base_model: str, speaker_name: str) -> LoraVoiceConfig:
        return LoraVoiceConfig(
            base_model=base_model,
            speaker_name=speaker_name,
            rank=self.rank,
            alpha=self.alpha if self.alpha is not None else default_alpha(self.rank),
            targets=tuple(self.targets or LORA_TARGETS),
        )


def attach_adapters(talker: torch.nn.Module, settings: LoraSettings) -> Any:
    """Inject fresh adapters into ``talker`` (in place); returns the ``PeftModel`` (what saves them). Only the
    adapters train afterwards."""
    from peft import LoraConfig, get_peft_model

    voice = settings.config("", "")
    config = LoraConfig(
        r=voice.rank,
        lora_alpha=voice.alpha,
        target_modules=target_pattern(voice.targets),
        lora_dropout=0.0,
        bias="none",
    )
    return get_peft_model(talker, config)


def adapter_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The adapters' parameters; every other parameter of ``model`` stops training."""
    chosen = []
    for name, parameter in model.named_parameters():
        trains = ADAPTER_MARK in name
        parameter.requires_grad_(trains)
        if trains:
            chosen.append(parameter)
    return chosen


def export_lora_checkpoint(
    peft_model: Any,
    *,
    voice: LoraVoiceConfig,
    output_dir: Path,
    epoch: int,
    speaker_embedding: torch.Tensor,
    state: TrainingState | None = None,
) -> Path:
    """Write ``output_dir/checkpoint-epoch-{epoch}`` as a LoRA voice folder, atomically; returns its path."""
    from safetensors.torch import save_file

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(output_dir, epoch)
    temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{final.name}-", dir=output_dir))
    try:
        peft_model.save_pretrained(str(temp))
        save_file(
            {SPEAKER_EMBEDDING_KEY: speaker_embedding.detach().to("cpu", torch.float32).contiguous()},
            str(temp / SPEAKER_EMBEDDING_FILE),
        )
        (temp / "README.md").unlink(
            missing_ok=True
        )  # PEFT's model card template says nothing about the voice
        if state is not None:
            state.write(temp)
        voice.write(temp)  # last: config.json marks the folder complete
        _replace_dir(temp, final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return final


def load_adapter_weights(peft_model: Any, folder: Path) -> None:
    """Continue from a LoRA checkpoint: its adapter weights into ``peft_model``'s (same rank and targets)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(folder) / ADAPTER_WEIGHTS_FILE
    if not path.is_file():
        raise ResumeCheckpointError(
            f"{folder} is not a LoRA checkpoint (no {ADAPTER_WEIGHTS_FILE}): resume a lora job from a lora job"
        )
    result: Any = set_peft_model_state_dict(peft_model, load_file(str(path)))  # keys missing and unexpected
    missing = [key for key in result.missing_keys if ".lora_" in key]
    if missing or result.unexpected_keys:
        raise ResumeCheckpointError(
            f"{folder}'s adapter does not fit this run's rank and targets (missing {missing[:3]}, unexpected "
            f"{list(result.unexpected_keys)[:3]}); resume with the LoRA settings it was trained with"
        )
