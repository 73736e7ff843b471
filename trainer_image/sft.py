"""Supervised fine-tuning of a Qwen3-TTS Base model into a one-speaker custom_voice model.

The input sequence mirrors what `Qwen3TTSForConditionalGeneration.generate` feeds the talker for a custom voice in
non-streaming mode, so training and inference see the same layout. Per position, a text channel and a codec
channel are summed:

    text : role(3) | pad ... pad, tts_bos | text tokens, tts_eos | pad     | pad × frames     | pad
    codec: -       | tags, SPK, codec_pad | codec_pad × (n + 1)  | bos     | sum of 16 codes  | eos

`tags` is nothink/think_bos/think_eos ("auto" language) or think/think_bos/<language>/think_eos; SPK is the
speaker-encoder embedding of the sample's reference audio. Label alignment (upstream issues #179/#371 shift twice):
the talker's codebook-0 labels sit at the positions of the tokens themselves and the model's `ForCausalLMLoss`
shifts them once; the code predictor (sub-talker) gets, for frame k, the talker hidden state of the position
before frame k (the one that predicted its codebook 0, as during generation) followed by codebooks 0..14, and its
logits for codebooks 1..15 are scored against those codes directly. Loss = talker CE + 0.3 × sub-talker CE.
"""

from __future__ import annotations

import hashlib
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..qwen import choose_runtime, load_model
from ..schemas import SAMPLE_RATE
from ..settings import Settings
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
from .codes import AUTO_LANGUAGE, Sample, encode_samples

__all__ = [
    "Sample",
    "StepEvent",
    "TrainConfig",
    "encode_samples",
    "train",
]

SUB_TALKER_LOSS_WEIGHT = 0.3
IGNORE_INDEX = -100
# "<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n": qwen_tts slices the ids the same way.
ROLE_TOKENS = 3
TRAILING_TOKENS = 5


def assistant_text(text: str) -> str:
    return f"<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>assistant\n"


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
    # Epoch checkpoints kept while training: each is a full model (~3.5 GB at 1.7B), and the seed's 50 GB disk
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


# ----- batches ---------------------------------------------------------------------------------------------------


@dataclass
class PreparedSample:
    """A sample as token ids: what `build_batch` needs (the benchmark builds these directly)."""

    role_ids: torch.Tensor  # (3,)
    text_ids: torch.Tensor  # (n,)
    codes: torch.Tensor  # (frames, num_code_groups)
    speaker_embedding: torch.Tensor  # (hidden,)
    language_id: int | None = None


@dataclass
class Batch:
    text_ids: torch.Tensor  # (B, L) text channel
    text_on: torch.Tensor  # (B, L) bool
    codec_ids: torch.Tensor  # (B, L) codec channel: control ids and codebook 0
    codec_on: torch.Tensor  # (B, L) bool
    sub_codes: torch.Tensor  # (B, L, G-1) codebooks 1.. at frame positions
    frame_on: torch.Tensor  # (B, L) bool: positions holding an audio frame
    labels: torch.Tensor  # (B, L) codebook-0 targets at their own positions, IGNORE_INDEX elsewhere
    attention_mask: torch.Tensor  # (B, L) long
    speaker_pos: torch.Tensor  # (B,)
    speaker_embeddings: torch.Tensor  # (B, hidden)
    tokens: int = field(default=0)  # real (unpadded) positions, for throughput figures

    def to(self, device: torch.device | str) -> Batch:
        moved = {
            name: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value
            for name, value in vars(self).items()
        }
        return Batch(**moved)


def _sequence(sample: PreparedSample, config: Any) -> dict[str, Any]:
    talker = config.talker_config
    if sample.language_id is None:
        tags = [talker.codec_nothink_id, talker.codec_think_bos_id, talker.codec_think_eos_id]
    else:
        tags = [
            talker.codec_think_id,
            talker.codec_think_bos_id,
            sample.language_id,
            talker.codec_think_eos_id,
        ]
    head = len(tags) + 2  # tags, speaker, codec_pad
    n_text = sample.text_ids.shape[0]
    frames = sample.codes.shape[0]
    length = ROLE_TOKENS + head + n_text + 1 + 1 + frames + 1

    text_ids = torch.full((length,), config.tts_pad_token_id, dtype=torch.long)
    codec_ids = torch.full((length,), talker.codec_pad_id, dtype=torch.long)
    codec_on = torch.ones(length, dtype=torch.bool)
    frame_on = torch.zeros(length, dtype=torch.bool)
    sub_codes = torch.zeros((length, sample.codes.shape[1] - 1), dtype=torch.long)
    labels = torch.full((length,), IGNORE_INDEX, dtype=torch.long)

    text_ids[:ROLE_TOKENS] = sample.role_ids
    codec_on[:ROLE_TOKENS] = False
    position = ROLE_TOKENS
    codec_ids[position : position + len(tags)] = torch.tensor(tags)
    speaker_pos = position + len(tags)
    codec_on[speaker_pos] = False
    text_ids[position + head - 1] = config.tts_bos_token_id  # beside the codec_pad that closes the head
    position += head
    text_ids[position : position + n_text] = sample.text_ids
    text_ids[position + n_text] = config.tts_eos_token_id
    position += n_text + 1
    codec_ids[position] = talker.codec_bos_id
    position += 1
    codec_ids[position : position + frames] = sample.codes[:, 0]
    sub_codes[position : position + frames] = sample.codes[:, 1:]
    frame_on[position : position + frames] = True
    labels[position : position + frames] = sample.codes[:, 0]
    position += frames
    codec_ids[position] = talker.codec_eos_token_id
    labels[position] = talker.codec_eos_token_id
    return {
        "text_ids": text_ids,
        "codec_ids": codec_ids,
        "codec_on": codec_on,
        "sub_codes": sub_codes,
        "frame_on": frame_on,
        "labels": labels,
        "speaker_pos": speaker_pos,
        "length": length,
    }


def build_batch(samples: Sequence[PreparedSample], config: Any) -> Batch:
    """Right-padded batch of talker inputs for `samples` (`config` is the model's Qwen3TTSConfig)."""
    sequences = [_sequence(sample, config) for sample in samples]
    size, width = len(sequences), max(s["length"] for s in sequences)
    groups = samples[0].codes.shape[1]

    def padded(key: str, value: Any, shape: tuple[int, ...] = ()) -> torch.Tensor:
        out = torch.full((size, width, *shape), value, dtype=sequences[0][key].dtype)
        for row, seq in enumerate(sequences):
            out[row, : seq["length"]] = seq[key]
        return out

    attention = torch.zeros((size, width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        attention[row, : seq["length"]] = 1
    return Batch(
        text_ids=padded("text_ids", 0),
        text_on=attention.bool(),
        codec_ids=padded("codec_ids", 0),
        codec_on=padded("codec_on", False),
        sub_codes=padded("sub_codes", 0, (groups - 1,)),
        frame_on=padded("frame_on", False),
        labels=padded("labels", IGNORE_INDEX),
        attention_mask=attention,
        speaker_pos=torch.tensor([s["speaker_pos"] for s in sequences], dtype=torch.long),
        speaker_embeddings=torch.stack([s.speaker_embedding for s in samples]),
        tokens=sum(s["length"] for s in sequences),
    )


# ----- loss and step ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    talker: torch.Tensor
    sub_talker: torch.Tensor


def talker_inputs(model: Any, batch: Batch) -> torch.Tensor:
    """(B, L, hidden) input embeddings: projected text channel + codec channel + frame codes + speaker."""
    talker = model.talker
    text = talker.text_projection(talker.get_text_embeddings()(batch.text_ids)) * batch.text_on.unsqueeze(-1)
    embeds = text + talker.get_input_embeddings()(batch.codec_ids) * batch.codec_on.unsqueeze(-1)
    frame_on = batch.frame_on.unsqueeze(-1)
    for index, embedding in enumerate(talker.code_predictor.get_input_embeddings()):
        embeds = embeds + embedding(batch.sub_codes[..., index]) * frame_on
    speaker = torch.zeros_like(embeds)
    rows = torch.arange(embeds.shape[0], device=embeds.device)
    speaker[rows, batch.speaker_pos] = batch.speaker_embeddings.to(embeds.dtype)
    return embeds + speaker


def sft_loss(model: Any, batch: Batch) -> LossParts:
    """Talker CE on codebook 0 (shifted once, by the model's loss) + 0.3 × sub-talker CE on codebooks 1..15."""
    talker = model.talker
    outputs = talker(
        inputs_embeds=talker_inputs(model, batch),
        attention_mask=batch.attention_mask,
        labels=batch.labels,
        use_cache=False,
        output_hidden_states=True,
    )
    hidden = outputs.hidden_states[0][-1]  # final (normed) talker hidden states, (B, L, hidden)

    # Frame k at position p is predicted from the hidden state at p - 1: talker for codebook 0, and the code
    # predictor for the rest, which starts from that same hidden state during generation.
    frame_hidden = hidden[:, :-1][batch.frame_on[:, 1:]]
    frame_codes = torch.cat(
        [batch.codec_ids[batch.frame_on].unsqueeze(-1), batch.sub_codes[batch.frame_on]], dim=-1
    )
    predictor_embeddings = talker.code_predictor.get_input_embeddings()
    sub_inputs = [frame_hidden.unsqueeze(1), talker.get_input_embeddings()(frame_codes[:, :1])]
    sub_inputs += [
        predictor_embeddings[i](frame_codes[:, i + 1 : i + 2]) for i in range(frame_codes.shape[1] - 2)
    ]
    sub_logits = talker.code_predictor.forward_finetune(
        inputs_embeds=torch.cat(sub_inputs, dim=1), use_cache=False
    ).logits
    sub_loss = F.cross_entropy(
        sub_logits.float().reshape(-1, sub_logits.shape[-1]), frame_codes[:, 1:].reshape(-1)
    )
    return LossParts(
        total=outputs.loss + SUB_TALKER_LOSS_WEIGHT * sub_loss, talker=outputs.loss, sub_talker=sub_loss
    )


def trainable_parameters(model: Any) -> list[torch.nn.Parameter]:
    """Everything but the speaker encoder (frozen: it only fills the speaker slot and is not exported)."""
    return [p for name, p in model.named_parameters() if not name.startswith("speaker_encoder.")]


def train_step(
    model: Any,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    parameters: Sequence[torch.nn.Parameter],
    grad_clip: float,
    autocast_dtype: torch.dtype | None,
) -> LossParts:
    optimizer.zero_grad(set_to_none=True)
    device_type = batch.text_ids.device.type
    with torch.autocast(
        device_type=device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
    ):
        parts = sft_loss(model, batch)
    parts.total.backward()
    torch.nn.utils.clip_grad_norm_(parameters, grad_clip)
    optimizer.step()
    return parts


def make_optimizer(
    parameters: Sequence[torch.nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.AdamW:
    return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)


# ----- samples → prepared samples --------------------------------------------------------------------------------


def _language_id(model: Any, language: str) -> int | None:
    if language.lower() == AUTO_LANGUAGE:
        return None
    languages = model.config.talker_config.codec_language_id or {}
    if language.lower() not in languages:
        raise ValueError(
            f"language {language!r} is not supported by this model; use one of {sorted(languages)} or 'auto'"
        )
    return int(languages[language.lower()])


def prepare_samples(tts: Any, samples: Sequence[Sample]) -> list[PreparedSample]:
    """Tokenize texts and embed each distinct reference audio once with the (frozen) speaker encoder."""
    model = tts.model
    groups = model.config.talker_config.num_code_groups
    codebook = model.config.talker_config.code_predictor_config.vocab_size
    embeddings: dict[bytes, torch.Tensor] = {}
    prepared = []
    for index, sample in enumerate(samples):
        codes = sample.audio_codes
        if codes.ndim != 2 or codes.shape[1] != groups or codes.shape[0] == 0:
            raise ValueError(
                f"sample {index}: audio_codes must be (frames ≥ 1, {groups}), got {tuple(codes.shape)}"
            )
        if int(codes.min()) < 0 or int(codes.max()) >= codebook:
            raise ValueError(
                f"sample {index}: audio codes must lie in [0, {codebook}); encode with this model"
            )
        ids = tts.processor(text=assistant_text(sample.text), return_tensors="pt")["input_ids"].reshape(-1)
        text_ids = ids[ROLE_TOKENS:-TRAILING_TOKENS]
        if text_ids.numel() == 0:
            raise ValueError(f"sample {index}: text {sample.text!r} has no tokens")
        key = hashlib.blake2b(sample.ref_audio.tobytes(), digest_size=16).digest()
        if key not in embeddings:
            embedding = model.extract_speaker_embedding(sample.ref_audio, SAMPLE_RATE)
            embeddings[key] = embedding.detach().to("cpu", torch.float32).clone()  # out of inference mode
        prepared.append(
            PreparedSample(
                role_ids=ids[:ROLE_TOKENS].clone(),
                text_ids=text_ids.clone(),
                codes=codes.to(torch.long),
                speaker_embedding=embeddings[key],
                language_id=_language_id(model, sample.language),
            )
        )
    return prepared


# ----- the loop --------------------------------------------------------------------------------------------------


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


def _permutation(count: int, seed: int, salt: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + salt)
    return torch.randperm(count, generator=generator).tolist()


def fixed_batches(count: int, batch_size: int, seed: int) -> list[list[int]]:
    """The samples split into batches once (seeded shuffle): every epoch trains on the same batches, so per-epoch
    mean losses compare the same data."""
    order = _permutation(count, seed, -1)
    return [order[start : start + batch_size] for start in range(0, count, batch_size)]


def batch_order(batches: int, seed: int, epoch: int, first_epoch: int, last_epoch: int) -> list[int]:
    """Batch indices of one epoch, shuffled by (seed, epoch). The run's last epoch ends with the batch its first
    epoch began with, so the first and the last reported loss are measured on the same clips: with a few short
    clips the loss differs more between batches than one short run lowers it."""
    order = _permutation(batches, seed, epoch)
    if epoch == last_epoch and first_epoch != last_epoch:
        opening = _permutation(batches, seed, first_epoch)[0]
        order.remove(opening)
        order.append(opening)
    return order


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
        for step, index in enumerate(batch_order(len(batches), config.seed, epoch, first_epoch, total_epochs - 1)):
            chosen = [prepared[i] for i in batches[index]]
            batch = build_batch(chosen, model.config).to(model.device)
            parts = train_step(model, optimizer, batch, parameters, config.grad_clip, autocast_dtype)
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
            base_dir,
            config.output_dir,
            epoch,
            config.speaker_name,
            slot,
            speaker_embedding,
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
