"""Supervised fine-tuning of a Qwen3-TTS Base model into a one-speaker custom_voice model: the training loop.

`train` prepares the samples (`prepare`), builds the talker's inputs (`batching`, which documents the layout),
takes optimizer steps on the SFT loss (`step`, `loss`) in a seeded batch order (`schedule`) and exports one
checkpoint per epoch (`checkpoint`), resuming from an earlier checkpoint when asked.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from ..qwen import choose_runtime, load_model
from ..settings import Settings
from .batching import build_batch
from .checkpoint import (
    OPTIMIZER_FILE,
    TrainingState,
    choose_speaker_slot,
    drop_training_state,
    export_checkpoint,
    list_checkpoints,
    load_checkpoint_weights,
    local_model_dir,
    remove_temporary_folders,
    speaker_slot_of,
)
from .codes import Sample
from .prepare import prepare_samples
from .schedule import batch_order, fixed_batches
from .step import make_optimizer, train_step, trainable_parameters

__all__ = [
    "StepEvent",
    "TrainConfig",
    "train",
]


@dataclass
class TrainConfig:
    speaker_name: str
    num_epochs: int
    batch_size: int
    lr: float
    output_dir: Path
    seed: int = 0
    grad_clip: float = 1.0
    weight_decay: float = 0.01
    resume_from: Path | None = None
    # Epoch checkpoints kept while training: each is a full model (~3.5 GB at 1.7B), and the original service's 50 GB disk
    # cannot hold 15 of them.
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if not self.speaker_name.strip():
            raise ValueError("speaker_name must not be empty")
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs must be at least 1, got {self.num_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {self.keep_checkpoints}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be positive, got {self.grad_clip}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must not be negative, got {self.weight_decay}")
        self.output_dir = Path(self.output_dir)
        self.resume_from = Path(self.resume_from) if self.resume_from is not None else None


@dataclass(frozen=True)
class StepEvent:
    """After each optimizer step. `epoch` (as in checkpoint-epoch-N) and `step` (within the epoch) count from 0;
    `global_step` is the number of optimizer steps done, resumed runs included."""

    epoch: int
    total_epochs: int
    step: int
    global_step: int
    loss: float


@dataclass(frozen=True)
class _Resume:
    state: TrainingState | None
    slot: int | None
    folder: Path


def _resume(model: Any, config: TrainConfig) -> _Resume | None:
    if config.resume_from is None:
        return None
    folder = config.resume_from
    load_checkpoint_weights(model, folder)
    return _Resume(TrainingState.read(folder), speaker_slot_of(folder, config.speaker_name), folder)


def load_base_model(model_path: str | Path, settings: Settings) -> Any:
    """The Base model to fine-tune (a `qwen_tts.Qwen3TTSModel`), also the one that encodes the audio codes.

    fp32 master weights (bf16 weights would round lr≈1e-6 updates away); bf16 autocast does the math on a GPU.
    """
    tts = load_model(model_path, settings, replace(choose_runtime(settings), dtype_name="float32"))
    model = tts.model
    if model.tts_model_type != "base" or model.speaker_encoder is None:
        raise ValueError(f"{model_path} is a {model.tts_model_type} model; fine-tuning starts from a Base model")
    return tts


def train(
    model_path: str | Path,
    samples: list[Sample],
    *,
    config: TrainConfig,
    settings: Settings,
    on_step: Callable[[StepEvent], None],
    tts: Any | None = None,
) -> Path:
    """Fine-tune the Base model at `model_path` (already loaded by `load_base_model` when `tts` is given) on
    `samples`; returns the last checkpoint folder.

    One checkpoint per epoch, `output_dir/checkpoint-epoch-N`; the latest also holds optimizer state for resuming.
    With `resume_from`, weights (and speaker slot) come from that checkpoint; when it still holds trainer state the
    optimizer moments, epoch numbering and global step continue too. `num_epochs` is the number of epochs this call
    trains, so a resumed run always trains further.
    """
    if not samples:
        raise ValueError("no training samples")
    tts = tts or load_base_model(model_path, settings)
    model = tts.model
    base_dir = local_model_dir(model_path)
    resumed = _resume(model, config)
    state = resumed.state if resumed else None
    slot = (
        resumed.slot
        if resumed and resumed.slot is not None
        else choose_speaker_slot(model.config.talker_config)
    )

    torch.manual_seed(config.seed)
    model.speaker_encoder.requires_grad_(False).eval()
    prepared = prepare_samples(tts, samples)
    speaker_embedding = torch.stack([p.speaker_embedding for p in prepared]).mean(dim=0)

    parameters = trainable_parameters(model)
    optimizer = make_optimizer(parameters, config.lr, config.weight_decay)
    if resumed and state is not None and (resumed.folder / OPTIMIZER_FILE).is_file():
        optimizer.load_state_dict(torch.load(resumed.folder / OPTIMIZER_FILE, map_location=model.device))
        for group in optimizer.param_groups:  # this run's hyper-parameters win
            group.update(lr=config.lr, weight_decay=config.weight_decay)
    first_epoch = state.epoch + 1 if state else 0
    global_step = state.global_step if state else 0
    total_epochs = first_epoch + config.num_epochs
    autocast_dtype = torch.bfloat16 if model.device.type == "cuda" else None

    remove_temporary_folders(config.output_dir)
    model.talker.train()
    latest: Path | None = None
    batches = fixed_batches(len(prepared), config.batch_size, config.seed)
    for epoch in range(first_epoch, total_epochs):
        order = batch_order(
            len(batches), seed=config.seed, epoch=epoch, first_epoch=first_epoch, last_epoch=total_epochs - 1
        )
        for step, index in enumerate(order):
            chosen = [prepared[i] for i in batches[index]]
            batch = build_batch(chosen, model.config).to(model.device)
            parts = train_step(
                model,
                optimizer,
                batch=batch,
                parameters=parameters,
                grad_clip=config.grad_clip,
                autocast_dtype=autocast_dtype,
            )
            loss = parts.total.item()
            if not math.isfinite(loss):
                raise FloatingPointError(
                    f"loss became {loss} at epoch {epoch} step {step}; lower the learning rate (lr={config.lr})"
                )
            global_step += 1
            on_step(StepEvent(epoch, total_epochs, step, global_step, loss))
        checkpoint_state = TrainingState(epoch, global_step, config.speaker_name, slot, config.seed)
        latest = export_checkpoint(
            model,
            base_dir=base_dir,
            output_dir=config.output_dir,
            epoch=epoch,
            speaker_name=config.speaker_name,
            speaker_slot=slot,
            speaker_embedding=speaker_embedding,
            optimizer=optimizer,
            state=checkpoint_state,
        )
        checkpoints = [folder for _, folder in list_checkpoints(config.output_dir)]
        for folder in checkpoints[: -config.keep_checkpoints]:
            shutil.rmtree(folder)
        for folder in checkpoints[-config.keep_checkpoints :]:
            if folder != latest:
                drop_training_state(folder)  # resume state lives beside the latest checkpoint only
    assert latest is not None
    return latest
