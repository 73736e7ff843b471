"""Supervised fine-tuning of a Qwen3-TTS Base model into a one-speaker custom_voice model: the training loop.

`train` prepares the samples (`prepare`), builds the talker's inputs (`batching`, which documents the layout),
checks that the step fits the GPU (`fit`), takes optimizer steps on the SFT loss (`step`, `loss`; one step per
`gradient_accumulation_steps` batches) in a seeded batch order (`schedule`) with the memory recipe of
`VFT_TRAIN_RECIPE` (`recipe`, `optim`) and exports one checkpoint per epoch (`checkpoint`), resuming from an
earlier checkpoint when asked. Optimizer state goes to disk only when the run stops early (it is what a resume of
an interrupted run needs; a finished run publishes weights only).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch

from voicefinetune.checkpoints import list_checkpoints
from voicefinetune.lora_voice import is_lora_voice
from voicefinetune.qwen import choose_runtime, load_model
from voicefinetune.settings import Settings
from voicefinetune_trainer.batching import build_batch
from voicefinetune_trainer.checkpoint import (
    OPTIMIZER_FILE,
    ResumeCheckpointError,
    TrainingState,
    choose_speaker_slot,
    drop_training_state,
    export_checkpoint,
    load_checkpoint_weights,
    local_model_dir,
    remove_temporary_folders,
    save_optimizer_state,
    speaker_slot_of,
)
from voicefinetune_trainer.codes import Sample
from voicefinetune_trainer.fit import WontFit, check_training_fits
from voicefinetune_trainer.lora import (
    LoraSettings,
    adapter_parameters,
    attach_adapters,
    export_lora_checkpoint,
    load_adapter_weights,
)
from voicefinetune_trainer.prepare import prepare_samples
from voicefinetune_trainer.recipe import DEFAULT_RECIPE, Recipe, get_recipe
from voicefinetune_trainer.schedule import batch_order, fixed_batches
from voicefinetune_trainer.step import make_optimizer, train_step, trainable_parameters

log = logging.getLogger(__name__)
_DTYPE_NAMES: dict[torch.dtype, Literal["bfloat16", "float16", "float32"]] = {
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float32: "float32",
}

__all__ = [
    "StepEvent",
    "TrainConfig",
    "WontFit",
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
    # Epoch checkpoints kept while training: each is a full model (~3.5 GB at 1.7B). Writes are atomic, so the newest
    # alone is enough; while the next one is written there are two.
    keep_checkpoints: int = 1
    gradient_accumulation_steps: int = 1
    recipe: str = DEFAULT_RECIPE
    lora: LoraSettings | None = None  # method lora: adapters train (recipe `lora`), the base stays frozen
    base_model: str | None = None  # what a LoRA voice's config names as its base; default the model path

    def __post_init__(self) -> None:
        if not self.speaker_name.strip():
            raise ValueError("speaker_name must not be empty")
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs must be at least 1, got {self.num_epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(
                f"gradient_accumulation_steps must be at least 1, got {self.gradient_accumulation_steps}"
            )
        get_recipe(self.recipe)
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


def _resume(model: Any, config: TrainConfig, adapters: Any | None) -> _Resume | None:
    """Weights of the resume checkpoint: a full model's into ``model``, a LoRA voice's into ``adapters``."""
    if config.resume_from is None:
        return None
    folder = config.resume_from
    if is_lora_voice(folder) != (adapters is not None):
        raise ResumeCheckpointError(
            f"{folder} is a {'lora' if is_lora_voice(folder) else 'full'} checkpoint: resume it with that method"
        )
    if adapters is not None:
        load_adapter_weights(adapters, folder)
        return _Resume(TrainingState.read(folder), None, folder)
    load_checkpoint_weights(model, folder)
    return _Resume(TrainingState.read(folder), speaker_slot_of(folder, config.speaker_name), folder)


def load_base_model(model_path: str | Path, settings: Settings, recipe: str | None = None) -> Any:
    """The Base model to fine-tune (a `qwen_tts.Qwen3TTSModel`), also the one that encodes the audio codes.

    Weights in the dtype of the recipe (`VFT_TRAIN_RECIPE`): fp32 master weights, or on CUDA bf16 ones whose
    optimizer keeps an fp32-precise extension (plain bf16 weights would round lr≈1e-6 updates away).
    """
    runtime = choose_runtime(settings)
    dtype = get_recipe(recipe or settings.train_recipe).weights_dtype(torch.device(runtime.device).type)
    tts = load_model(
        model_path,
        settings,
        replace(runtime, dtype_name=_DTYPE_NAMES[dtype]),
    )
    model = tts.model
    if model.tts_model_type != "base" or model.speaker_encoder is None:
        raise ValueError(
            f"{model_path} is a {model.tts_model_type} model; fine-tuning starts from a Base model"
        )
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

    One checkpoint per epoch, `output_dir/checkpoint-epoch-N` with `trainer_state.json`; when the run stops early
    (an exception, a signal turned into one) the newest checkpoint also gets the optimizer state. With
    `resume_from`, weights (and speaker slot) come from that checkpoint; when it holds trainer state the epoch
    numbering and global step continue too, and the optimizer moments when it holds them. `num_epochs` is the
    number of epochs this call trains, so a resumed run always trains further.
    """
    if not samples:
        raise ValueError("no training samples")
    recipe = get_recipe(config.recipe)
    tts = tts or load_base_model(model_path, settings, config.recipe)
    model = tts.model
    base_dir = local_model_dir(model_path)
    adapters = attach_adapters(model.talker, config.lora) if config.lora else None
    resumed = _resume(model, config, adapters)
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
    _release_encoders(model)

    parameters = (
        adapter_parameters(model)
        if adapters is not None
        else trainable_parameters(model, freeze_text_embedding=recipe.freeze_text_embedding)
    )
    if recipe.checkpointing(model.device.type):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _check_fits(model, recipe, prepared, config=config, settings=settings)
    optimizer = make_optimizer(parameters, config.lr, config.weight_decay, recipe.state_dtype)
    if resumed and state is not None and (resumed.folder / OPTIMIZER_FILE).is_file():
        _load_optimizer_state(optimizer, resumed.folder / OPTIMIZER_FILE, config)
    first_epoch = state.epoch + 1 if state else 0
    global_step = state.global_step if state else 0
    total_epochs = first_epoch + config.num_epochs
    autocast_dtype = recipe.autocast_dtype(model.device.type)

    remove_temporary_folders(config.output_dir)
    model.talker.train()
    latest: Path | None = None
    batches = fixed_batches(len(prepared), config.batch_size, config.seed)
    built = [
        build_batch([prepared[i] for i in batch], model.config) for batch in batches
    ]  # the same every epoch
    accumulate = config.gradient_accumulation_steps
    try:
        for epoch in range(first_epoch, total_epochs):
            order = batch_order(
                len(batches),
                seed=config.seed,
                epoch=epoch,
                first_epoch=first_epoch,
                last_epoch=total_epochs - 1,
            )
            for step, start in enumerate(range(0, len(order), accumulate)):
                group = [built[index].to(model.device) for index in order[start : start + accumulate]]
                parts = train_step(
                    model,
                    optimizer,
                    batch=group,
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
            epoch_state = TrainingState(epoch, global_step, config.speaker_name, slot, config.seed)
            if adapters is not None and config.lora is not None:
                latest = export_lora_checkpoint(
                    adapters,
                    voice=config.lora.config(config.base_model or str(model_path), config.speaker_name),
                    output_dir=config.output_dir,
                    epoch=epoch,
                    speaker_embedding=speaker_embedding,
                    state=epoch_state,
                )
            else:
                latest = export_checkpoint(
                    model,
                    base_dir=base_dir,
                    output_dir=config.output_dir,
                    epoch=epoch,
                    speaker_name=config.speaker_name,
                    speaker_slot=slot,
                    speaker_embedding=speaker_embedding,
                    state=epoch_state,
                )
            checkpoints = [folder for _, folder in list_checkpoints(config.output_dir)]
            for folder in checkpoints[: -config.keep_checkpoints]:
                shutil.rmtree(folder)
            for folder in checkpoints[-config.keep_checkpoints :]:
                if folder != latest:
                    drop_training_state(folder)  # resume state lives beside the latest checkpoint only
    except BaseException:
        if latest is not None:  # stopped early: what a resume of this run continues from
            save_optimizer_state(optimizer, latest)
        raise
    assert latest is not None
    return latest


def _load_optimizer_state(optimizer: torch.optim.Optimizer, path: Path, config: TrainConfig) -> None:
    """The moments of an interrupted run; fresh ones when they belong to another recipe (other parameters)."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError) as exc:
        log.warning(
            "optimizer state in %s does not fit this run's recipe (%s); starting with fresh moments",
            path,
            exc,
        )
        optimizer.state.clear()
        return
    for group in optimizer.param_groups:  # this run's hyper-parameters win
        group.update(lr=config.lr, weight_decay=config.weight_decay)


def _release_encoders(model: Any) -> None:
    """On a GPU, the speech tokenizer and the speaker encoder are done once the samples are prepared."""
    if model.device.type != "cuda":
        return
    model.speaker_encoder.to("cpu")
    tokenizer_model = getattr(model.speech_tokenizer, "model", None)
    if isinstance(tokenizer_model, torch.nn.Module):
        tokenizer_model.to("cpu")
        model.speech_tokenizer.device = torch.device("cpu")
    torch.cuda.empty_cache()


def _check_fits(
    model: Any, recipe: Recipe, prepared: list[Any], *, config: TrainConfig, settings: Settings
) -> None:
    """On CUDA (unless VFT_TRAIN_FIT_CHECK=0): refuse at once a run whose estimated peak exceeds the free memory."""
    if model.device.type != "cuda" or not settings.train_fit_check:
        return
    free, _ = torch.cuda.mem_get_info(model.device)
    check_training_fits(
        model,
        recipe,
        prepared,
        batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        free_bytes=free + torch.cuda.memory_allocated(model.device),  # the loaded weights are in the estimate
    )
